"""A master's change as an outbox event, emitted in the transaction that made it.

One event per change, ordered by key ``<cqrs_id>:<pk>`` (one instance's changes are published in
the order they committed). ``data`` is django-cqrs's ``TransportPayload.to_dict()``; the data
content type ``CONTENT_TYPE`` marks the event as a CQRS payload, which the RabbitMQ target then
publishes in django-cqrs's own layout (exchange ``CQRS_EXCHANGE``, routing key ``cqrs_id``, the
payload as the JSON body) instead of as a CloudEvent. Redis Streams and own topics carry it as a
CloudEvent of type ``cqrs.<cqrs_id>.<signal>`` (``save``, ``delete``, ``sync``: CloudEvents types
are lower-case by custom).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from app.cqrs.payload import SignalType, TransportPayload
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent

CONTENT_TYPE = "application/vnd.django-cqrs+json"
TYPE_PREFIX = "cqrs."
SOURCE = "/cqrs"


def event_type(cqrs_id: str, signal: SignalType) -> str:
    return f"{TYPE_PREFIX}{cqrs_id}.{signal.value.lower()}"


def expires() -> datetime | None:
    ttl = settings.CQRS_MESSAGE_TTL_S
    return timezone.now() + timedelta(seconds=ttl) if ttl else None


def correlation_id(signal: SignalType, cqrs_id: str, instance_pk: Any, queue: str | None) -> Any:
    """django-cqrs's ``correlation_function``: CQRS_CORRELATION_FUNCTION names one, else none."""
    if not settings.CQRS_CORRELATION_FUNCTION:
        return None
    function: Callable[..., Any] = import_string(settings.CQRS_CORRELATION_FUNCTION)
    return function(signal.value, cqrs_id, instance_pk, queue)


def emit_payload(payload: TransportPayload, *, queue: str | None = None, using: str = "default") -> OutboxEvent:
    """Write ``payload`` into the current transaction of ``using``. A SYNC for one ``queue`` goes
    to that replica's queue alone on RabbitMQ (django-cqrs's ``cqrs.<queue>.<cqrs_id>`` routing key)."""
    destination = ""
    if queue and payload.signal_type is SignalType.SYNC and settings.OUTBOX_TARGET == "rabbitmq":
        destination = f"cqrs.{queue}.{payload.cqrs_id}"
    return emit(
        event_type(payload.cqrs_id, payload.signal_type), SOURCE, payload.model_dump(mode="json"),
        subject=str(payload.instance_pk), key=f"{payload.cqrs_id}:{payload.instance_pk}",
        datacontenttype=CONTENT_TYPE, destination=destination, using=using,
    )
