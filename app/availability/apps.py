from django.apps import AppConfig


class AvailabilityConfig(AppConfig):
    name = "app.availability"
    label = "availability"
    verbose_name = "Availability"
