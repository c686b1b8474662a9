from django.apps import AppConfig


class AuthConfig(AppConfig):
    name = "app.auth"
    # "auth" is taken by django.contrib.auth.
    label = "switchyard_auth"
    verbose_name = "Switchyard tokens"
    default_auto_field = "django.db.models.BigAutoField"
