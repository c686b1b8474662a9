from django.apps import AppConfig


class ServerConfig(AppConfig):
    name = "app.server"
    label = "server"
    verbose_name = "Server"
