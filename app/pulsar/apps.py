from django.apps import AppConfig


class PulsarConfig(AppConfig):
    name = "app.pulsar"
    label = "pulsar"
    verbose_name = "Pulsar subscriptions"
    default_auto_field = "django.db.models.BigAutoField"
