"""Settings of the django-cqrs interop project: RabbitMQ transport as django-cqrs documents it; the
broker, exchange, queue and SQLite file come from the test (DJCQRS_* variables)."""

import os

SECRET_KEY = "interop-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "interop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJCQRS_DATABASE"]}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

CQRS = {
    "transport": "dj_cqrs.transport.rabbit_mq.RabbitMQTransport",
    "url": os.environ.get("DJCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    "exchange": os.environ.get("DJCQRS_EXCHANGE", "cqrs"),
    "queue": os.environ.get("DJCQRS_QUEUE", "djcqrs_interop"),
    "replica": {"CQRS_MAX_RETRIES": 2, "CQRS_RETRY_DELAY": 1},
}

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django-cqrs": {"handlers": ["console"], "level": "INFO"}},
}
