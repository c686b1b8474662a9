from django.apps import AppConfig


class WorkConfig(AppConfig):
    name = "app.work"
    label = "work"
    verbose_name = "Workers and work requests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from app.work import workers
        from app.work.tasks import register_builtin_tasks

        register_builtin_tasks()
        workers.connect()
