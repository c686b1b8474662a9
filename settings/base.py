"""Switchyard settings: environment first, units in the names (see docs/architecture.md section 14)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext

from settings.env import env_bool, env_choice, env_float, env_int, env_list, env_opt, env_str

# Lets model admins and querysets be subscripted for the type checker at run time too.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

STORE_POLICIES = ("disabled", "cache", "cacheall", "store")

SECRET_KEY = env_str("SWITCHYARD_SECRET_KEY", "switchyard-insecure-development-key-change-me")
DEBUG = env_bool("SWITCHYARD_DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in env_str("SWITCHYARD_ALLOWED_HOSTS", "*").split(",") if h.strip()]

INSTALLED_APPS = [
    # First: its runserver (Switchyard under uvicorn, websockets included) replaces Django's and staticfiles'.
    "app.server",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "guardian",
    "channels",
    # Installed so its docs page loads swagger-ui from its own static files, not from a CDN.
    "ninja",
    "app.api",
    "app.auth",
    "app.availability",
    "app.broker",
    "app.leases",
    "app.outbox",
    "app.pulsar",
    "app.cqrs",
    "app.work",
]

# Users' own Django apps (models, master or replica, services that emit), after Switchyard's own:
# comma-separated import paths found on PYTHONPATH. `manage.py migrate` creates their tables and
# `manage.py serve` serves them (README "Your own apps").
SWITCHYARD_APPS = env_list("SWITCHYARD_APPS")
for _app in SWITCHYARD_APPS:
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", _app):
        raise ValueError(f"SWITCHYARD_APPS: {_app!r} is not an import path (comma-separated, e.g. shop,billing.apps)")
    if _app in INSTALLED_APPS:
        raise ValueError(f"SWITCHYARD_APPS: {_app!r} is installed already")
INSTALLED_APPS += SWITCHYARD_APPS

MIDDLEWARE = [
    # Outermost, so it sees the session user whatever looked it up (the access line's who).
    "app.server.session_caller.SessionCaller",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "app.server.urls"
ASGI_APPLICATION = "settings.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# SQLite's synchronous pragma: NORMAL (a commit survives a process crash) or FULL (a power cut too).
SQLITE_SYNCHRONOUS = env_choice("SQLITE_SYNCHRONOUS", "normal", ("normal", "full"))


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(url))
    # Keep connections: closing and reopening one per group commit cost more than the commit.
    config["CONN_MAX_AGE"] = None
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside the single writer. synchronous=NORMAL keeps a commit durable
        # against a process kill (the WAL is in the OS cache), which is the bar we set; FULL also
        # against a power cut, with an fsync per commit (README "Durability").
        config["OPTIONS"] = {
            "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS};",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    return config


DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{Path.cwd() / 'switchyard.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_opt("REDIS_URL")
# The layer only carries the backplane (one channel per process, a group per topic), so Redis
# pub/sub fits: one PUBLISH per message whatever the number of processes, nothing to expire.
# Lost messages are repaired from the database. See benchmarks/RESULTS.md for the measurement.
CHANNEL_LAYER_KIND = env_choice("CHANNEL_LAYER_KIND", "pubsub", ("pubsub", "core"))
# Names every channel and group on Redis: processes that share a Redis but not a database (test
# sessions run side by side) must not hear each other's backplane.
CHANNEL_LAYER_PREFIX = env_str("CHANNEL_LAYER_PREFIX", "asgi")
CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": (
        {"BACKEND": "channels.layers.InMemoryChannelLayer"}
        if REDIS_URL is None
        else {
            "BACKEND": (
                "channels_redis.pubsub.RedisPubSubChannelLayer"
                if CHANNEL_LAYER_KIND == "pubsub"
                else "channels_redis.core.RedisChannelLayer"
            ),
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": CHANNEL_LAYER_PREFIX,
                **({} if CHANNEL_LAYER_KIND == "pubsub" else {"capacity": 10_000}),
            },
        }
    ),
}

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
GUARDIAN_RAISE_403 = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
# Filled by `manage.py collectstatic` (`make serve` runs it) and served by app/server/static_files.py.
STATIC_ROOT = Path(env_str("SWITCHYARD_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Gzipped copies next to the files, sent to clients that accept them. Not the manifest storage:
    # its hashed names fail every admin page with a 500 until collectstatic has run.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# The level of Switchyard's log (and of every library's that sets none).
LOG_LEVEL = env_str("SWITCHYARD_LOG_LEVEL", "INFO").upper()
# websockets logs each handshake header at DEBUG, an Authorization header too (the CQRS topic
# consumer's token; on the server, a client's): its loggers never go below INFO.
_WEBSOCKETS_LOG_LEVEL = max(logging.INFO, logging.getLevelNamesMapping().get(LOG_LEVEL, logging.INFO))
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "app.server.log_format.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {"answers_are_not_errors": {"()": "app.server.request_log.AnswersAreNotErrors"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "websockets.client": {"level": _WEBSOCKETS_LOG_LEVEL},
        "websockets.server": {"level": _WEBSOCKETS_LOG_LEVEL},
        "django.request": {"filters": ["answers_are_not_errors"]},
    },
}
# One INFO line per HTTP request and websocket handshake on the logger "switchyard.access"
# (app/server/access_log.py; credential-like query values masked).
ACCESS_LOG = env_bool("ACCESS_LOG", True)
# "json": every log line (access lines too) is one JSON object (app/server/log_format.py).
LOG_FORMAT = env_choice("SWITCHYARD_LOG_FORMAT", "plain", ("plain", "json"))
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
# /readyz: how long each dependency (database, channel layer, outbox targets) may take to answer.
READINESS_TIMEOUT_S = env_float("READINESS_TIMEOUT_S", 2.0)
# /metrics: with a token, only "Authorization: Bearer <token>" may scrape; without, loopback clients only.
METRICS_TOKEN = env_opt("METRICS_TOKEN")

# --- broker -------------------------------------------------------------------------------
STORE_MESSAGES = env_choice("STORE_MESSAGES", "cache", STORE_POLICIES)
STORE_SOURCE_MESSAGES = env_choice("STORE_SOURCE_MESSAGES", STORE_MESSAGES, STORE_POLICIES)
STORE_RESPONSE_MESSAGES = env_choice("STORE_RESPONSE_MESSAGES", STORE_MESSAGES, STORE_POLICIES)
CREATE_TOPIC_ON_MESSAGE = env_bool("CREATE_TOPIC_ON_MESSAGE", True)
# Pulsar's allowAutoTopicCreation: a handshake on /ws/v2/producer/ or /ws/v2/consumer/ naming a
# missing topic creates it, for anyone (public, not supports_dasf, counted by TOPICS_PER_PRINCIPAL).
ALLOW_AUTO_TOPIC_CREATION = env_bool("ALLOW_AUTO_TOPIC_CREATION", False)
# A named producer (producerName) holds a lease this long, renewed every third of it while it
# lives: a killed server's names are free again after at most this long.
PRODUCER_NAME_LEASE_S = env_float("PRODUCER_NAME_LEASE_S", 30.0)
if PRODUCER_NAME_LEASE_S <= 0:
    raise ValueError("PRODUCER_NAME_LEASE_S must be positive")
# A frame above MAX_FRAME_BYTES gets an error ack; above WS_HARD_LIMIT_BYTES uvicorn closes with 1009.
MAX_FRAME_BYTES = env_int("MAX_FRAME_BYTES", 1024 * 1024)
WS_HARD_LIMIT_BYTES = max(MAX_FRAME_BYTES * 4, env_int("WS_HARD_LIMIT_BYTES", 0))
# Per-connection outbound queue: a consumer this far behind is closed with 4408 and is
# redelivered what it had not acked when it reconnects.
SEND_QUEUE_FRAMES = env_int("SEND_QUEUE_FRAMES", 10_000)
# Message ids a consumer connection remembers as delivered-but-unacked (for ack validation).
UNACKED_PER_CONNECTION = env_int("UNACKED_PER_CONNECTION", 50_000)
# Characters of unacked frames a Pulsar subscription's consumer may hold (kept for their redelivery);
# past it nothing more is sent to it until acks free room.
UNACKED_CHARS_PER_CONNECTION = env_int("UNACKED_CHARS_PER_CONNECTION", 64 * 1024 * 1024)
# Pulsar subscriptions (docs/architecture.md 18.3): one process serves a subscription at a time,
# holding a lease this long, renewed every third of it; a crashed holder's standbys take over after it.
SUBSCRIPTION_LEASE_S = env_float("SUBSCRIPTION_LEASE_S", 10.0)
# Pulsar refuses ackTimeoutMillis under a second: a shorter one is 400 (0 still turns it off).
MIN_ACK_TIMEOUT_MS = env_int("MIN_ACK_TIMEOUT_MS", 1000)
# Keys a Key_Shared subscription remembers the consumer of; keys with nothing in flight are evicted.
KEY_SHARED_MAX_KEYS = env_int("KEY_SHARED_MAX_KEYS", 100_000)
# A dead letter topic that could not be found or made is not looked up again for this long: its
# messages are redelivered meanwhile, and the failure is logged once per period.
DEAD_LETTER_RETRY_S = env_float("DEAD_LETTER_RETRY_S", 10.0)
# permessage-deflate costs CPU on every frame; DASF clients do not ask for it anyway.
WS_PER_MESSAGE_DEFLATE = env_bool("WS_PER_MESSAGE_DEFLATE", False)
# How long a process trusts a cached topic + rights lookup (changes also invalidate it at once).
TOPIC_VIEW_TTL_S = env_float("TOPIC_VIEW_TTL_S", 10.0)
# How often each server reads the changes other processes announced (rights, topics created or
# deleted, revoked credentials): the longest a change made elsewhere takes to reach open sockets.
ANNOUNCEMENT_POLL_INTERVAL_S = env_float("ANNOUNCEMENT_POLL_INTERVAL_S", 0.25)
# Announcements are deleted this long after they were made.
ANNOUNCEMENT_RETENTION_S = env_float("ANNOUNCEMENT_RETENTION_S", 600.0)
# How long a process trusts a token it checked (revocations drop it at once).
AUTH_CACHE_TTL_S = env_float("AUTH_CACHE_TTL_S", 10.0)
# Connection-rate limits (token buckets; a rate of 0 turns one off). Connections that are not
# authenticated count against their client address, authenticated ones against their principal;
# failed token / session lookups against the address in a bucket of their own. A refused
# handshake is answered with HTTP 429.
CONNECT_RATE_PER_ADDRESS_PER_S = env_float("CONNECT_RATE_PER_ADDRESS_PER_S", 50.0)
CONNECT_BURST_PER_ADDRESS = env_float("CONNECT_BURST_PER_ADDRESS", 500.0)
CONNECT_RATE_PER_PRINCIPAL_PER_S = env_float("CONNECT_RATE_PER_PRINCIPAL_PER_S", 50.0)
CONNECT_BURST_PER_PRINCIPAL = env_float("CONNECT_BURST_PER_PRINCIPAL", 500.0)
FAILED_AUTH_RATE_PER_ADDRESS_PER_S = env_float("FAILED_AUTH_RATE_PER_ADDRESS_PER_S", 5.0)
FAILED_AUTH_BURST_PER_ADDRESS = env_float("FAILED_AUTH_BURST_PER_ADDRESS", 50.0)
# Websockets one client address (unauthenticated) or one principal may hold open at once (0: no limit).
MAX_CONNECTIONS_PER_ADDRESS = env_int("MAX_CONNECTIONS_PER_ADDRESS", 1000)
MAX_CONNECTIONS_PER_PRINCIPAL = env_int("MAX_CONNECTIONS_PER_PRINCIPAL", 10_000)
# How often consumers are checked against the database for messages the fast path lost.
RESYNC_INTERVAL_S = env_float("RESYNC_INTERVAL_S", 2.0)
# Group commit: at most this many rows per transaction.
WRITE_BATCH_ROWS = env_int("WRITE_BATCH_ROWS", 500)

# --- availability ------------------------------------------------------------------------
# 0 turns the ping relay off in this process.
PING_INTERVAL_S = env_float("PING_INTERVAL_S", 60.0)
AVAILABILITY_WINDOW_S = env_float("AVAILABILITY_WINDOW_S", 120.0)
PONG_GRACE_S = env_float("PONG_GRACE_S", 10.0)
if PONG_GRACE_S <= 0:
    raise ValueError("PONG_GRACE_S must be positive")
# A consumer attaching to a DASF topic whose latest ping is unanswered has it pinged at once (a new
# module is online within seconds); at most once per this long per topic and process, so attaching
# and detaching in a loop does not ping (or write) per connection.
ATTACH_PING_MIN_INTERVAL_S = env_float("ATTACH_PING_MIN_INTERVAL_S", 10.0)
if ATTACH_PING_MIN_INTERVAL_S <= 0:
    raise ValueError("ATTACH_PING_MIN_INTERVAL_S must be positive")
# Pongs and api_info answers for a topic are written at most once per this long per process (an
# answer flood costs no writes; a different api_info within it is refused). It must stay below
# PONG_GRACE_S, which accepts a pong that much older than its ping.
PONG_WRITE_MIN_INTERVAL_S = env_float("PONG_WRITE_MIN_INTERVAL_S", min(1.0, PONG_GRACE_S / 10))
if not 0 <= PONG_WRITE_MIN_INTERVAL_S < PONG_GRACE_S:
    raise ValueError("PONG_WRITE_MIN_INTERVAL_S must be at least 0 and below PONG_GRACE_S")
# An api_info answer larger than this is refused (the admin and status viewers decode it often).
MAX_API_INFO_BYTES = env_int("MAX_API_INFO_BYTES", 256 * 1024)
# How often status viewers' topics are re-read (time alone turns online into offline).
STATUS_REFRESH_S = env_float("STATUS_REFRESH_S", 1.0)
# A response topic with no consumer and nothing outstanding is deleted this long after.
RESPONSE_TOPIC_TTL_S = env_float("RESPONSE_TOPIC_TTL_S", 600.0)
# How often the garbage collection loop runs; 0 turns it off in this process.
GC_INTERVAL_S = env_float("GC_INTERVAL_S", 60.0)
# A Pulsar subscription with no consumer for this long is deleted by the garbage collection loop;
# 0 keeps subscriptions until unsubscribed (Pulsar's default subscription expiry).
SUBSCRIPTION_TTL_S = env_float("SUBSCRIPTION_TTL_S", 0.0)

# --- transactional outbox ------------------------------------------------------------------
OUTBOX_TARGETS = ("topic", "rabbitmq", "redis")
AMQP_URL = env_opt("AMQP_URL")
# Redis Streams use their own URL if given, else the channel layer's Redis.
OUTBOX_REDIS_URL = env_opt("OUTBOX_REDIS_URL") or REDIS_URL
# Where events go when ``emit`` names no target: RabbitMQ when configured, else Redis Streams,
# else this server's own topics (the embedded default needs nothing else running).
OUTBOX_TARGET = env_choice(
    "OUTBOX_TARGET", "rabbitmq" if AMQP_URL else "redis" if OUTBOX_REDIS_URL else "topic", OUTBOX_TARGETS
)
# Relay tasks each server process runs (0: none here; run ``manage.py outbox_relay`` instead).
OUTBOX_RELAY_TASKS = env_int("OUTBOX_RELAY_TASKS", 1)
# Events a relay claims per round trip; each key's events in it are published in order.
OUTBOX_BATCH_SIZE = env_int("OUTBOX_BATCH_SIZE", 100)
# Fallback wake-up when no notification arrives (PostgreSQL LISTEN/NOTIFY, in-process commits).
OUTBOX_POLL_INTERVAL_S = env_float("OUTBOX_POLL_INTERVAL_S", 1.0)
# After this many failed publish attempts an event is dead-lettered (status failed).
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 10)
OUTBOX_BACKOFF_BASE_S = env_float("OUTBOX_BACKOFF_BASE_S", 1.0)
OUTBOX_BACKOFF_MAX_S = env_float("OUTBOX_BACKOFF_MAX_S", 300.0)
# A claim not settled in this time (the relay died) is taken over by another relay.
OUTBOX_CLAIM_TTL_S = env_float("OUTBOX_CLAIM_TTL_S", 60.0)
# One publish waiting longer than this counts as the target being unreachable.
OUTBOX_PUBLISH_TIMEOUT_S = env_float("OUTBOX_PUBLISH_TIMEOUT_S", 10.0)
# Published events are deleted this long after publication (checked every prune interval).
OUTBOX_RETENTION_S = env_float("OUTBOX_RETENTION_S", 7 * 24 * 3600.0)
OUTBOX_PRUNE_INTERVAL_S = env_float("OUTBOX_PRUNE_INTERVAL_S", 60.0)
# A dead letter holds back the later events of its key until it is retried or deleted (strict
# order); off, the key's later events go on without it.
OUTBOX_FAILED_BLOCKS_KEY = env_bool("OUTBOX_FAILED_BLOCKS_KEY", True)
# Largest encoded ``data`` an event may carry.
OUTBOX_MAX_DATA_BYTES = env_int("OUTBOX_MAX_DATA_BYTES", 1024 * 1024)
OUTBOX_AMQP_EXCHANGE = env_str("OUTBOX_AMQP_EXCHANGE", "switchyard.events")
OUTBOX_AMQP_EXCHANGE_TYPE = env_choice("OUTBOX_AMQP_EXCHANGE_TYPE", "topic", ("topic", "direct", "fanout", "headers"))
# binary: attributes as ``cloudEvents:`` application properties, data as the body;
# structured: the whole event as an application/cloudevents+json body.
OUTBOX_AMQP_MODE = env_choice("OUTBOX_AMQP_MODE", "binary", ("binary", "structured"))
# Unroutable events are returned and retried instead of being confirmed and dropped by RabbitMQ.
OUTBOX_AMQP_MANDATORY = env_bool("OUTBOX_AMQP_MANDATORY", True)
OUTBOX_REDIS_STREAM = env_str("OUTBOX_REDIS_STREAM", "switchyard.events")
OUTBOX_REDIS_MAXLEN = env_int("OUTBOX_REDIS_MAXLEN", 1_000_000)
# The own-topics target: the topic used when an event names none; missing topics are created.
OUTBOX_TOPIC = env_str("OUTBOX_TOPIC", "events")

# --- topic creation limits (squatting and floods) -------------------------------------------
# Longest topic name anywhere: websocket URLs, auto-created, response and event topics. The slug
# column holds 200 characters, so no more may be allowed.
TOPIC_NAME_MAX_CHARS = env_int("TOPIC_NAME_MAX_CHARS", 200)
if not 1 <= TOPIC_NAME_MAX_CHARS <= 200:
    raise ValueError(f"TOPIC_NAME_MAX_CHARS={TOPIC_NAME_MAX_CHARS} must be between 1 and 200")
# Topics one principal may have auto-created (first message) that still exist.
TOPICS_PER_PRINCIPAL = env_int("TOPICS_PER_PRINCIPAL", 1000)
# Pulsar subscriptions one principal may have created that still exist, over all topics (all
# anonymous clients are one principal and share this).
SUBSCRIPTIONS_PER_PRINCIPAL = env_int("SUBSCRIPTIONS_PER_PRINCIPAL", 100)
# Response topics one producer connection may have created that still exist (the DASF client
# uses one per process).
RESPONSE_TOPICS_PER_CONNECTION = env_int("RESPONSE_TOPICS_PER_CONNECTION", 100)
# Response topics one principal may have created that still exist; all anonymous clients are
# one principal and share this.
RESPONSE_TOPICS_PER_PRINCIPAL = env_int("RESPONSE_TOPICS_PER_PRINCIPAL", 1000)
# A response topic no consumer attached to is deleted this long after its creation.
RESPONSE_TOPIC_UNATTACHED_TTL_S = env_float("RESPONSE_TOPIC_UNATTACHED_TTL_S", 600.0)

# --- admin login throttle ------------------------------------------------------------------
# After this many failed admin logins within the window, a username (from any address) or a
# client address (for any username; IPv6 per /64) gets 429 without its password being checked.
# A window of 0 turns the throttle off.
LOGIN_FAILURES_MAX = env_int("LOGIN_FAILURES_MAX", 5)
LOGIN_ADDRESS_FAILURES_MAX = env_int("LOGIN_ADDRESS_FAILURES_MAX", 20)
LOGIN_FAILURE_WINDOW_S = env_float("LOGIN_FAILURE_WINDOW_S", 900.0)
if min(LOGIN_FAILURES_MAX, LOGIN_ADDRESS_FAILURES_MAX) < 1:
    raise ValueError("LOGIN_FAILURES_MAX and LOGIN_ADDRESS_FAILURES_MAX must be at least 1")

# --- memory and handshake bounds --------------------------------------------------
# Per-connection outbound queue in bytes, besides SEND_QUEUE_FRAMES (live messages held back during
# a replay count against it too): a peer this far behind, or one that never reads, is closed with
# 4408. One frame larger than this still goes out when nothing else is queued.
SEND_QUEUE_BYTES = env_int("SEND_QUEUE_BYTES", 16 * 1024 * 1024)
# An ack echoes the frame's ``context`` only when its JSON is at most this long (else it is left
# out): a refused frame of megabytes must not come back to a peer that may never read.
MAX_ECHOED_CONTEXT_BYTES = env_int("MAX_ECHOED_CONTEXT_BYTES", 1024)
# A connection that has not sent a complete request head (and, for a websocket, been accepted)
# within this time is closed.
HANDSHAKE_TIMEOUT_S = env_float("HANDSHAKE_TIMEOUT_S", 10.0)
# Largest request head (request line plus headers): a longer one is answered 414 / 431 and closed.
MAX_REQUEST_HEAD_BYTES = env_int("MAX_REQUEST_HEAD_BYTES", 16 * 1024)
# A request body must be complete within this time of its head, or the request is answered 408 and
# the connection closed.
REQUEST_BODY_TIMEOUT_S = env_float("REQUEST_BODY_TIMEOUT_S", 30.0)
# Largest request body: a longer one is answered 413 and closed, by its Content-Length before any of
# it is read, a chunked one once it is over. An emit of OUTBOX_MAX_DATA_BYTES of data is up to three
# times that in JSON (non-ASCII escaped as \uXXXX), 4/3 of it in base64.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 4 * OUTBOX_MAX_DATA_BYTES)
if REQUEST_BODY_TIMEOUT_S <= 0 or MAX_REQUEST_BODY_BYTES < 1:
    raise ValueError("REQUEST_BODY_TIMEOUT_S and MAX_REQUEST_BODY_BYTES must be positive")
# Django spools an arriving request body in memory up to this size, then in a temporary file
# (TMPDIR): a stalled upload holds at most this much memory, not 2.5 MiB.
FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
# Django refuses larger bodies with 400 and an ERROR log: the body limit above is the one limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# About the most one page of stored messages over HTTP holds (the sum of their frames' sizes; one
# message always goes): a page of 200 messages of MAX_FRAME_BYTES each would be 200 MiB.
API_PAGE_MAX_BYTES = env_int("API_PAGE_MAX_BYTES", 4 * 1024 * 1024)
if API_PAGE_MAX_BYTES < 1:
    raise ValueError("API_PAGE_MAX_BYTES must be positive")
# Most operations one /api/v1/_bulk/ request may hold (its body is bounded by MAX_REQUEST_BODY_BYTES
# too); a POST bulk holds its database transaction open while they all run.
BULK_MAX_OPERATIONS = env_int("BULK_MAX_OPERATIONS", 100)
if BULK_MAX_OPERATIONS < 1:
    raise ValueError("BULK_MAX_OPERATIONS must be positive")
# Most bytes of results (answers' bodies, paths, reasons) one bulk keeps and answers: the operation
# whose answer passes it is the last run (a POST bulk is rolled back, 502), its answer left out.
BULK_MAX_RESULT_BYTES = env_int("BULK_MAX_RESULT_BYTES", 4 * 1024 * 1024)
if BULK_MAX_RESULT_BYTES < 1:
    raise ValueError("BULK_MAX_RESULT_BYTES must be positive")

# --- producer back-pressure -------------------------------------------------------
# Bytes one producer connection may have submitted for storing and not yet committed (the memory
# its messages hold, app/broker/pressure.py): past it the server reads no more of its frames until
# commits catch up (TCP slows the client; nothing is dropped). One message always goes.
PRODUCER_PENDING_BYTES = env_int("PRODUCER_PENDING_BYTES", 8 * 1024 * 1024)
# Bytes the group-commit writer may hold for all connections together: past it every producer with
# a message not yet committed waits for its commits before its next frame.
WRITE_QUEUE_BYTES = env_int("WRITE_QUEUE_BYTES", 64 * 1024 * 1024)
# Bytes of deliveries waiting to be sent to the other processes (Redis): past it the oldest are
# dropped, as past 10,000 messages (stored ones are repaired from the database; the other
# processes' consumers lose live messages of `disabled` topics, which are not stored).
BACKPLANE_QUEUE_BYTES = env_int("BACKPLANE_QUEUE_BYTES", 32 * 1024 * 1024)
