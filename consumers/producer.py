"""Producer sockets: ``/ws/<topic>`` and ``/ws/v2/producer/<persistence>/<tenant>/<ns>/<topic>``."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone
from pydantic import ValidationError

from app import codec
from app.auth.services import ANONYMOUS_PRINCIPAL
from app.broker import creation, pressure, quotas, services
from app.broker.hub import Delivered
from app.broker.identifiers import new_message_id
from app.broker.naming import topic_name_error
from app.broker.permissions import Rights, may_add_topics
from app.broker.runtime import get_runtime
from app.broker.services import NewMessage, OpResult, TopicError
from app.broker.topics import TopicView
from app.pulsar.frames import PublishError, delivery_time, publish_frame_error
from app.pulsar.semantics import PathShape, pulsar_semantics
from consumers.auth import client_address
from consumers.base import AckingConsumer, context_echo, describe
from consumers.frames import BROKER_FIELDS, ProducerAck, ProducerFrame


def unstorable_reason(frame: ProducerFrame) -> str | None:
    """Why a message cannot be stored on every backend, or None. PostgreSQL's text and jsonb hold no
    NUL character (its insert failed, logging a traceback per frame, while SQLite took the message):
    refused on every backend, so a producer hears the same answer wherever it is served."""
    for where, value in (("payload", frame.payload), ("properties", frame.properties), ("context", frame.context)):
        if codec.contains_nul(value):
            return f"{where}: {codec.NUL_REFUSED}"
    return None


class TopicProducer(AckingConsumer):
    metrics_kind = "dasf_producer"
    topic: TopicView | None = None

    def __init__(self, path_shape: PathShape = PathShape.DASF) -> None:
        super().__init__()
        self.path_shape = path_shape
        # Bytes of this connection's messages submitted for storing and not yet committed.
        self.pending_bytes = 0
        self.pending_limit: int = settings.PRODUCER_PENDING_BYTES
        self._committed: asyncio.Event | None = None  # set by each commit while held

    async def on_connect(self) -> None:
        self.slug: str = self.scope["url_route"]["kwargs"]["topic"]
        self.runtime = get_runtime()
        # Response topics this connection created, for RESPONSE_TOPICS_PER_CONNECTION.
        self.created_response_topics: set[int] = set()
        if topic_name_error(self.slug) is not None:
            return  # no topic has this name: every frame is refused, saying why
        self.runtime.hub.watch(self.slug, self)
        self._adopt(await self.runtime.topic_view(self.slug, self.user, self.principal))

    def _adopt(self, topic: TopicView | None) -> TopicView | None:
        """Cache the topic; a response topic's source is watched too (the right to answer on a
        response topic comes from consuming its source)."""
        self.topic = topic
        if topic is not None and topic.source_slug is not None:
            self.runtime.hub.watch(topic.source_slug, self)
        return topic

    async def on_disconnect(self) -> None:
        if hasattr(self, "runtime"):
            self.runtime.hub.unwatch(self.slug, self)
            if self.topic is not None and self.topic.source_slug is not None:
                self.runtime.hub.unwatch(self.topic.source_slug, self)

    def recheck_rights(self) -> None:
        """Permissions on the topic (or its source) changed somewhere: read them again before the
        next frame."""
        if self.topic is not None and self.topic.source_slug is not None:
            self.runtime.hub.unwatch(self.topic.source_slug, self)
        self.topic = None

    def acknowledge(self, message_id: str, echo: dict[str, Any]) -> None:
        """An ok ack; ``echo`` is ``context_echo`` of the frame (worked out before its commit, so
        the parsed frame is not kept meanwhile)."""
        self.push_model(ProducerAck(messageId=message_id, result="ok", **echo))

    async def on_frame(self, raw: dict[str, Any]) -> None:
        try:
            frame = ProducerFrame.model_validate(raw)
        except ValidationError as exc:
            # A payload that is no string is Pulsar's "invalid payload encoding" too, when the
            # topic (already looked up) has Pulsar semantics.
            error = self._pulsar_frame_error(self.topic, raw)
            if error is not None:
                self._refuse_publish(error, raw)
            else:
                self.refuse(f"invalid frame: {describe(exc)}", raw)
            return
        topic = self.topic if self.topic is not None else await self._topic_on_first_message(raw)
        if topic is None:
            return
        if not topic.rights.produce:
            self.refuse(self._denied("not allowed to publish to this topic"), raw)
            return
        error = self._pulsar_frame_error(topic, raw)
        if error is not None:
            self._refuse_publish(error, raw)
            return
        unstorable = unstorable_reason(frame) if topic.policy.stores else None
        if unstorable is not None:
            self.refuse(unstorable, raw)
            return
        response_topic_id: int | None = None
        response_slug = frame.properties.get("response_topic")
        if isinstance(response_slug, str) and response_slug:
            try:
                response_topic_id = await self._response_topic(topic, response_slug)
            except TopicError as exc:
                self.refuse(str(exc), raw)
                return
        message_uuid = uuid.UUID(frame.messageId) if frame.messageId else new_message_id()
        message_id = frame.messageId or str(message_uuid)
        now = timezone.now()
        # The delivery is the producer's object as received plus the broker's fields (the shape of
        # DeliveryFrame). It is serialised from a dict: any key a producer sends is relayed, even
        # one that a pydantic model would take for its own (``cls``, ``model_config``).
        fields = {k: v for k, v in raw.items() if k not in BROKER_FIELDS}
        text = codec.dumps({**fields, "messageId": message_id, "publishTime": now.isoformat()})
        echo = context_echo(raw)
        if not topic.policy.stores:
            self.runtime.deliver(topic.slug, Delivered(text, message_id, None))
            self.acknowledge(message_id, echo)
            return
        producer_id, principal = services.producer_identity(self.user)
        # Only Pulsar semantics read deliverAt / deliverAfterMs (a delay needs a storing policy, so
        # not above); elsewhere they are keys like any other.
        deliver_at = delivery_time(raw, now) if pulsar_semantics(self.path_shape, topic.supports_dasf) else None
        op = NewMessage(
            topic_id=topic.id,
            message_id=message_uuid,
            producer_id=producer_id,
            producer_principal=principal,
            properties=frame.properties,
            payload=frame.payload,
            context=frame.context,
            publish_time=now,
            frame=text,
            response_topic_id=response_topic_id,
            deliver_at=deliver_at,
        )

        size = pressure.held_bytes(op)

        def committed(result: OpResult) -> None:
            self.pending_bytes -= size
            if self._committed is not None:
                self._committed.set()
            if isinstance(result, int):
                self.runtime.deliver(topic.slug, Delivered(text, message_id, result, deliver_at))
                if not self.closing:
                    self.acknowledge(message_id, echo)
            elif not self.closing:
                reason = "duplicate messageId" if isinstance(result, IntegrityError) else "message not stored"
                self.refuse(reason, echo, message_id)

        writer = self.runtime.writer
        self.pending_bytes += size
        writer.submit(op, committed, size)
        self.held = pressure.must_wait(self.pending_bytes, self.pending_limit, writer.pending_bytes, writer.limit_bytes)

    def _pulsar_frame_error(self, topic: TopicView | None, raw: dict[str, Any]) -> PublishError | None:
        """What Pulsar semantics refuse in this frame; None on DASF semantics (nothing checked, so
        DASF producers pay nothing for it)."""
        if topic is None or not pulsar_semantics(self.path_shape, topic.supports_dasf):
            return None
        return publish_frame_error(raw, stores=topic.policy.stores)

    def _refuse_publish(self, error: PublishError, raw: dict[str, Any]) -> None:
        """An error ack with Pulsar's code (``send-error:<code>``) and message."""
        self.push_model(ProducerAck(messageId=str(uuid.uuid4()), result=error.result, errorMsg=error.message,
                                    **context_echo(raw)))

    async def until_released(self) -> None:
        """Wait for this connection's commits until it is within PRODUCER_PENDING_BYTES and the
        writer within WRITE_QUEUE_BYTES (or nothing of it is pending): its own commits release it,
        and the writer commits whatever producers do, so this ends."""
        writer = self.runtime.writer
        if self._committed is None:
            self._committed = asyncio.Event()
        while pressure.must_wait(self.pending_bytes, self.pending_limit, writer.pending_bytes, writer.limit_bytes):
            self._committed.clear()
            await self._committed.wait()
        self.held = False

    def _denied(self, reason: str) -> str:
        auth_error = self.scope.get("auth_error")
        return f"{reason} ({auth_error})" if auth_error else reason

    async def _topic_on_first_message(self, raw: dict[str, Any]) -> TopicView | None:
        """The topic did not exist at connect: look again, or create it when allowed."""
        reason = topic_name_error(self.slug)
        if reason is not None:
            self.refuse(reason, raw)
            return None
        # Anonymous producers may not create topics: for them the directory's answer stands, so a
        # flood of frames to a name that is no topic costs no query.
        anonymous = self.principal == ANONYMOUS_PRINCIPAL
        if self._adopt(await self.runtime.topic_view(self.slug, self.user, self.principal, fresh=not anonymous)):
            return self.topic
        if anonymous or not await database_sync_to_async(may_add_topics)(self.user):
            reason = (
                "not allowed to create topics" if settings.CREATE_TOPIC_ON_MESSAGE
                else f"topic {self.slug} does not exist"
            )
            self.refuse(self._denied(reason), raw)
            return None
        try:
            topic, created = await database_sync_to_async(creation.create_topic)(self.slug, self.user)
        except TopicError as exc:
            self.refuse(str(exc), raw)
            return None
        if not created:  # someone else created it meanwhile: its rights, not ours, apply
            return self._adopt(await self.runtime.topic_view(self.slug, self.user, self.principal, fresh=True))
        self.topic = TopicView.of(topic, Rights(produce=True, consume=True, view_status=True))
        self.runtime.grant(self.slug, self.principal)
        return self.topic

    async def _response_topic(self, source: TopicView, slug: str) -> int:
        """Make sure the response topic exists (before the request is acked); its id."""
        known = self.runtime.known_response_topic(slug, self.principal)
        if known is None:
            if len(self.created_response_topics) >= settings.RESPONSE_TOPICS_PER_CONNECTION:
                # Garbage collection may have freed room.
                self.created_response_topics = await database_sync_to_async(quotas.existing)(
                    self.created_response_topics
                )
            topic_id, created = await database_sync_to_async(creation.ensure_response_topic)(
                source.id, source.slug, slug, self.user, len(self.created_response_topics),
                quotas.creator(self.principal, client_address(self.scope)),
            )
            known = (topic_id, source.id)
            self.runtime.remember_response_topic(slug, self.principal, known)
            if created:
                self.created_response_topics.add(topic_id)
                self.runtime.grant(slug, self.principal)
        if known[1] != source.id:
            raise TopicError(f"response topic {slug} belongs to another topic")
        return known[0]
