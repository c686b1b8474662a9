from django.apps import AppConfig


class BrokerConfig(AppConfig):
    name = "app.broker"
    label = "broker"
    verbose_name = "Broker"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from app.broker import signals

        signals.connect()
