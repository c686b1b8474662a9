"""CQRS replication settings (app/cqrs, django-cqrs's wire format); read after ``settings.base``."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from settings.base import AMQP_URL
from settings.env import env_bool, env_float, env_int, env_opt, env_str

# Switchyard's topic names (app/broker/models.py TOPIC_PATTERN, and its slug column's width):
# settings cannot import the models.
_TOPIC_NAME = re.compile(r"[-_A-Za-z0-9]+")
_TOPIC_SLUG_MAX_CHARS = 200


def topic_names_problem(topic: str, subscription: str, names: tuple[str, str] = ("CQRS_TOPIC", "CQRS_QUEUE")
                        ) -> str | None:
    """Why ``subscription`` on ``topic`` (set as ``names``) cannot be the replica's, or None: the
    server's default dead letter topic, ``<topic>-<subscription>-DLQ``, must be a topic name too,
    else the server refuses the subscription at every connection."""
    for name, value in zip(names, (topic, subscription), strict=True):
        if not _TOPIC_NAME.fullmatch(value):
            return (f"{name}={value!r}: letters, digits, '-' and '_' only with CQRS_TOPIC "
                    f"(the dead letter topic is named <{names[0]}>-<{names[1]}>-DLQ)")
    dead_letters = f"{topic}-{subscription}-DLQ"
    if len(dead_letters) > _TOPIC_SLUG_MAX_CHARS:
        return (f"the dead letter topic <{names[0]}>-<{names[1]}>-DLQ would be {len(dead_letters)} characters "
                f"long, more than a topic name's {_TOPIC_SLUG_MAX_CHARS}: shorten {names[1]}")
    return None


def replica_source(*, queue: str | None, amqp_url: str | None, topic: str | None, topic_url: str | None,
                   topic_token: str | None, max_redeliver_count: int, dead_letter_queue: str | None) -> str | None:
    """Where a replica consumer reads (``"topic"``, ``"rabbitmq"``, or None: nowhere), checked at
    startup: a half-configured source stops the process with the reason rather than a consumer
    failing at its first connection."""
    if topic is None:
        stray = [name for name, value in (("CQRS_TOPIC_URL", topic_url), ("CQRS_TOPIC_TOKEN", topic_token)) if value]
        if stray:
            raise ValueError(f"{' and '.join(stray)} set but CQRS_TOPIC is not: name the topic to consume")
        if queue and not amqp_url:
            raise ValueError("CQRS_QUEUE is set but AMQP_URL is not: the replica consumer reads RabbitMQ "
                             "(or set CQRS_TOPIC and CQRS_TOPIC_URL to read a Switchyard topic)")
        return "rabbitmq" if amqp_url else None
    if not queue:
        raise ValueError("CQRS_TOPIC is set but CQRS_QUEUE is not: it names the replica's subscription")
    if not topic_url:
        raise ValueError("CQRS_TOPIC is set but CQRS_TOPIC_URL is not: the Switchyard server carrying it")
    if dead_letter_queue:
        # It would say that dead letters go to a RabbitMQ queue: the server moves them to its topic.
        raise ValueError("CQRS_DEAD_LETTER_QUEUE is RabbitMQ's: with CQRS_TOPIC the dead letters go to the "
                         "topic <CQRS_TOPIC>-<CQRS_QUEUE>-DLQ of the server; unset it")
    parts = urlsplit(topic_url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"CQRS_TOPIC_URL={_without_userinfo(topic_url)!r}: a ws:// or wss:// URL of a server, "
                         "without query")
    if "@" in parts.netloc:
        # The server reads no credentials from a URL, and a URL is printed where a token is not.
        raise ValueError("CQRS_TOPIC_URL holds a user:password@: give the replica's token as CQRS_TOPIC_TOKEN")
    problem = topic_names_problem(topic, queue)
    if problem is not None:
        raise ValueError(problem)
    if max_redeliver_count < 1:
        # 0 turns the server's dead letters off: a dead-lettered message would come back forever.
        raise ValueError("CQRS_TOPIC_MAX_REDELIVER_COUNT must be at least 1")
    return "topic"


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


# --- CQRS replication (app/cqrs, django-cqrs's wire format) -----------------------------
# The durable topic exchange CQRS payloads go through on RabbitMQ (django-cqrs's default name): a
# master's events are routed by their cqrs_id, a replica's queue is bound to the ids it replicates.
CQRS_EXCHANGE = env_str("CQRS_EXCHANGE", "cqrs")
# Master side: seconds until a replica drops a change it has not applied (payload ``expires``;
# django-cqrs's default is one day; 0 = never), whether a save(update_fields=...) replicates too
# (django-cqrs's CQRS_AUTO_UPDATE_FIELDS), and the dotted path of a function
# (signal_type, cqrs_id, instance_pk, queue) -> correlation_id (django-cqrs's correlation_function).
CQRS_MESSAGE_TTL_S = env_int("CQRS_MESSAGE_TTL_S", 86_400)
CQRS_AUTO_UPDATE_FIELDS = env_bool("CQRS_AUTO_UPDATE_FIELDS", False)
CQRS_CORRELATION_FUNCTION = env_opt("CQRS_CORRELATION_FUNCTION")
# This replica's durable queue (django-cqrs's ``CQRS['queue']``), or with CQRS_TOPIC its subscription
# on the topic; set, the server consumes it (``manage.py cqrs_consume`` does without the server).
# Unset: no replica consumer in the server.
CQRS_QUEUE = env_opt("CQRS_QUEUE")
# False: the server leaves CQRS_QUEUE to ``manage.py cqrs_consume``. Per-instance order needs one
# consumer per queue, so deployments with several server processes turn it off.
CQRS_CONSUME_IN_SERVER = env_bool("CQRS_CONSUME_IN_SERVER", True)
# Read CQRS changes from a topic of a Switchyard server instead of RabbitMQ (a master publishing with
# OUTBOX_TARGET=topic): its name, set, makes the replica consumer subscribe to it as CQRS_QUEUE over
# the server's Pulsar websocket API (relays/cqrs_topic_consumer.py).
CQRS_TOPIC = env_opt("CQRS_TOPIC")
# The base websocket URL of the server carrying CQRS_TOPIC (ws://host:port or wss://host[/prefix]):
# the replica is usually another service, with a database of its own, so it reads over the wire.
CQRS_TOPIC_URL = env_opt("CQRS_TOPIC_URL")
# A token of the replica's user on that server (``createtoken``), which needs the consume right on
# CQRS_TOPIC; sent as an Authorization header, never in the URL. Unset: anonymous.
CQRS_TOPIC_TOKEN = env_opt("CQRS_TOPIC_TOKEN")
# The subscription's maxRedeliverCount: the server moves a message to the dead letter topic
# ``<CQRS_TOPIC>-<CQRS_QUEUE>-DLQ`` once it was redelivered more often. The consumer dead-letters by
# negative acks (each one a redelivery) and retries in place, so otherwise only connections that end
# count: a message left unacked by more connections than this is dead-lettered unapplied. High, so
# that restarts never do it; each dead letter then costs up to this many nacks, which is cheap.
CQRS_TOPIC_MAX_REDELIVER_COUNT = env_int("CQRS_TOPIC_MAX_REDELIVER_COUNT", 100)
# The replica's dead letter queue (django-cqrs's ``CQRS['replica']['dead_letter_queue']``), for a
# deployment that shares one with a django-cqrs replica configured so. Unset: ``dead_letter_<queue>``.
CQRS_DEAD_LETTER_QUEUE = env_opt("CQRS_DEAD_LETTER_QUEUE")
if CQRS_DEAD_LETTER_QUEUE and CQRS_DEAD_LETTER_QUEUE == CQRS_QUEUE:
    # Dead letters would come back to the consumer that gave up on them, forever.
    raise ValueError("CQRS_DEAD_LETTER_QUEUE must not be CQRS_QUEUE")
# Where the replica consumer reads (derived; what the server, cqrs_consume and cqrs_dead_letters
# go by): "topic" with CQRS_TOPIC, else "rabbitmq" with AMQP_URL, else None.
CQRS_SOURCE = replica_source(
    queue=CQRS_QUEUE, amqp_url=AMQP_URL, topic=CQRS_TOPIC, topic_url=CQRS_TOPIC_URL, topic_token=CQRS_TOPIC_TOKEN,
    max_redeliver_count=CQRS_TOPIC_MAX_REDELIVER_COUNT, dead_letter_queue=CQRS_DEAD_LETTER_QUEUE,
)
# Failed applies are tried again this many times (django-cqrs's default 30; negative: forever),
# then the payload goes to the dead letter queue (with CQRS_TOPIC: the subscription's dead
# letter topic).
CQRS_MAX_RETRIES = env_int("CQRS_MAX_RETRIES", 30)
# Wait before retry n (counted from 0): CQRS_RETRY_DELAY_S * 2**n, at most CQRS_RETRY_DELAY_MAX_S.
CQRS_RETRY_DELAY_S = env_float("CQRS_RETRY_DELAY_S", 2.0)
CQRS_RETRY_DELAY_MAX_S = env_float("CQRS_RETRY_DELAY_MAX_S", 60.0)
# Dead letters expire from their queue after this long (django-cqrs's 10 days; 0: kept forever).
CQRS_DEAD_MESSAGE_TTL_S = env_int("CQRS_DEAD_MESSAGE_TTL_S", 864000)
# Largest CQRS message body the replica parses; a larger one is dead-lettered as received. Parsed JSON
# takes up to some 80 times its size in memory (a body of empty objects), and RabbitMQ accepts 128 MiB:
# 4 MiB is four times what a Switchyard master sends at most (OUTBOX_MAX_DATA_BYTES). Keep it well below
# the broker's max_message_size: a dead letter is the payload written again, which may be longer.
CQRS_MAX_BODY_BYTES = env_int("CQRS_MAX_BODY_BYTES", 4 * 1024 * 1024)
# Unacknowledged messages the consumer holds, including those waiting for a retry (RabbitMQ's
# prefetch count; a topic subscription's receiverQueueSize).
CQRS_PREFETCH_COUNT = env_int("CQRS_PREFETCH_COUNT", 100)
if CQRS_PREFETCH_COUNT < 1:
    # AMQP reads a prefetch count of 0 as "no limit": the consumer would take the whole queue.
    raise ValueError("CQRS_PREFETCH_COUNT must be at least 1")
# The replica consumer's back-off after a failed connection (or its database unavailable): about
# CQRS_RECONNECT_BASE_S x 2^n after n failures in a row (jittered down to half), up to 30 s.
CQRS_RECONNECT_BASE_S = env_float("CQRS_RECONNECT_BASE_S", 1.0)
if CQRS_RECONNECT_BASE_S <= 0:
    raise ValueError("CQRS_RECONNECT_BASE_S must be positive")
# The replica consumer's reconnection back-off starts again from the shortest only after a session
# that lasted this long or received a message: a connection accepted and closed at once (an evicted
# or standby consumer, a server shutting down) backs off as a refusal.
CQRS_RECONNECT_STABLE_S = env_float("CQRS_RECONNECT_STABLE_S", 30.0)
