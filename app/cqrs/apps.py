from django.apps import AppConfig


class CqrsConfig(AppConfig):
    name = "app.cqrs"
    label = "switchyard_cqrs"
    verbose_name = "CQRS replication"
    default_auto_field = "django.db.models.BigAutoField"
