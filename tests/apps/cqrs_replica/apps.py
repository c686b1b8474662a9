from django.apps import AppConfig


class CqrsReplicaConfig(AppConfig):
    name = "tests.apps.cqrs_replica"
    label = "cqrs_replica"
    default_auto_field = "django.db.models.BigAutoField"
