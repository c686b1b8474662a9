from django.apps import AppConfig


class CqrsMasterConfig(AppConfig):
    name = "tests.apps.cqrs_master"
    label = "cqrs_master"
    default_auto_field = "django.db.models.BigAutoField"
