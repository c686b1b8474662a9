from django.apps import AppConfig


class LeasesConfig(AppConfig):
    name = "app.leases"
    label = "leases"
    default_auto_field = "django.db.models.BigAutoField"
