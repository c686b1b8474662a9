"""Switchyard's own topics: events become broker messages, stored per the topic's policy and
delivered to the topic's websocket consumers in every process (through the backplane).

The message is a DASF/Pulsar delivery: ``payload`` is the base64 of the structured CloudEvent
(``application/cloudevents+json``), ``properties`` hold the attributes as ``ce_<name>``. Its
messageId is derived from the event's source and id, so an event published twice (a relay died
between publishing and settling) is stored once.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError, IntegrityError
from django.utils import timezone

from app import codec
from app.broker.creation import ensure_event_topic
from app.broker.hub import Delivered
from app.broker.policy import StorePolicy
from app.broker.runtime import BrokerRuntime, get_runtime
from app.broker.services import NewMessage, TopicError
from app.outbox.cloudevents import Outbound
from app.outbox.targets import PublishRejected, TargetUnavailable

PROPERTY_PREFIX = "ce_"
STRUCTURED_TYPE = "application/cloudevents+json"
PRODUCER = "outbox"


@dataclass(frozen=True, slots=True)
class _Topic:
    id: int
    slug: str
    policy: StorePolicy
    expires: float


def delivery_fields(event: Outbound, publish_time: str) -> dict[str, object]:
    properties = {f"{PROPERTY_PREFIX}{name}": value for name, value in event.string_attributes().items()}
    properties["content_type"] = STRUCTURED_TYPE
    return {
        "properties": properties,
        "payload": base64.b64encode(event.structured()).decode(),
        "messageId": str(event.message_id),
        "publishTime": publish_time,
    }


class TopicTarget:
    name = "topic"

    def __init__(self) -> None:
        self._runtime: BrokerRuntime | None = None
        self._topics: dict[str, _Topic] = {}

    async def connect(self) -> None:
        self._runtime = get_runtime()
        await self._runtime.start()

    async def _topic(self, slug: str) -> _Topic:
        known = self._topics.get(slug)
        if known is not None and known.expires > time.monotonic():
            return known
        try:
            topic = await database_sync_to_async(ensure_event_topic)(slug)
        except TopicError as exc:
            raise PublishRejected(str(exc)) from exc
        except DatabaseError as exc:
            raise TargetUnavailable(f"database: {exc!r}") from exc
        known = self._topics[slug] = _Topic(
            topic.pk, topic.slug, topic.policy, time.monotonic() + settings.TOPIC_VIEW_TTL_S
        )
        return known

    async def publish(self, event: Outbound) -> None:
        runtime = self._runtime
        if runtime is None:
            raise TargetUnavailable("the broker runtime is not started")
        topic = await self._topic(event.destination or settings.OUTBOX_TOPIC)
        now = timezone.now()
        fields = delivery_fields(event, now.isoformat())
        text = codec.dumps(fields)
        message_id = str(event.message_id)
        if not topic.policy.stores:
            runtime.deliver(topic.slug, Delivered(text, message_id, None))
            return
        result = await runtime.writer.write(
            NewMessage(
                topic_id=topic.id, message_id=event.message_id, producer_id=None, producer_principal=PRODUCER,
                properties=fields["properties"], payload=str(fields["payload"]), context=None,
                publish_time=now, frame=text,
            )
        )
        if isinstance(result, int):
            runtime.deliver(topic.slug, Delivered(text, message_id, result))
        elif isinstance(result, IntegrityError):
            return  # stored by an earlier attempt: consumers get it from there
        elif isinstance(result, Exception):
            raise TargetUnavailable(f"storing the message failed: {result!r}") from result

    async def close(self) -> None:
        self._topics.clear()
