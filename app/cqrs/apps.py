from django.apps import AppConfig


class CqrsConfig(AppConfig):
    name = "app.cqrs"
    label = "switchyard_cqrs"
    verbose_name = "CQRS replication"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from app.cqrs import changes

        changes.connect_masters()
