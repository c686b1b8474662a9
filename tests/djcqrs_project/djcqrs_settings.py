"""Settings of the django-cqrs interop project: RabbitMQ transport as django-cqrs documents it; the
broker, exchange, queue and database come from the test or benchmark (DJCQRS_* variables)."""

import os
from urllib.parse import urlsplit

SECRET_KEY = "interop-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "interop"]
# A SQLite file (the interop tests), or PostgreSQL (benchmarks/cqrs.py: django-cqrs on the same database
# server as Switchyard) when DJCQRS_DATABASE_URL names one.
if os.environ.get("DJCQRS_DATABASE_URL"):
    _url = urlsplit(os.environ["DJCQRS_DATABASE_URL"])
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": _url.path.lstrip("/"),
                             "USER": _url.username or "", "PASSWORD": _url.password or "",
                             "HOST": _url.hostname or "", "PORT": str(_url.port or ""),
                             # Kept, as Switchyard keeps its own: django-cqrs's consumer calls
                             # close_old_connections() before each message, so Django's default (0)
                             # would open a connection per message.
                             "CONN_MAX_AGE": None, "CONN_HEALTH_CHECKS": True}}
else:
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
    # INFO logs a line per message produced and consumed: the benchmark sets WARNING, as Switchyard's logs.
    "loggers": {"django-cqrs": {"handlers": ["console"], "level": os.environ.get("DJCQRS_LOG_LEVEL", "INFO")}},
}
