"""CQRS replication settings (app/cqrs, django-cqrs's wire format); read after ``settings.base``."""

from __future__ import annotations

from settings.base import AMQP_URL
from settings.env import env_bool, env_float, env_int, env_opt, env_str

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
# This replica's durable queue (django-cqrs's ``CQRS['queue']``); set, the server consumes it
# (``manage.py cqrs_consume`` does without the server). Unset: no replica consumer in the server.
CQRS_QUEUE = env_opt("CQRS_QUEUE")
# False: the server leaves CQRS_QUEUE to ``manage.py cqrs_consume``. Per-instance order needs one
# consumer per queue, so deployments with several server processes turn it off.
CQRS_CONSUME_IN_SERVER = env_bool("CQRS_CONSUME_IN_SERVER", True)
if CQRS_QUEUE and not AMQP_URL:
    raise ValueError("CQRS_QUEUE is set but AMQP_URL is not: the replica consumer reads RabbitMQ")
# Failed applies are tried again this many times (django-cqrs's default 30; negative: forever),
# then the payload goes to the dead letter queue.
CQRS_MAX_RETRIES = env_int("CQRS_MAX_RETRIES", 30)
# The replica's dead letter queue (django-cqrs's ``CQRS['replica']['dead_letter_queue']``), for a
# deployment that shares one with a django-cqrs replica configured so. Unset: ``dead_letter_<queue>``.
CQRS_DEAD_LETTER_QUEUE = env_opt("CQRS_DEAD_LETTER_QUEUE")
if CQRS_DEAD_LETTER_QUEUE and CQRS_DEAD_LETTER_QUEUE == CQRS_QUEUE:
    # Dead letters would come back to the consumer that gave up on them, forever.
    raise ValueError("CQRS_DEAD_LETTER_QUEUE must not be CQRS_QUEUE")
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
# Unacknowledged messages the consumer holds, including those waiting for a retry.
CQRS_PREFETCH_COUNT = env_int("CQRS_PREFETCH_COUNT", 100)
if CQRS_PREFETCH_COUNT < 1:
    # AMQP reads a prefetch count of 0 as "no limit": the consumer would take the whole queue.
    raise ValueError("CQRS_PREFETCH_COUNT must be at least 1")
