"""Moving a message that was redelivered too often to its dead letter topic (docs/architecture.md 18.4).

The copy has a new ``messageId`` and ``publishTime``; ``payload``, ``properties`` and ``key`` are
kept. On a stored topic one writer op stores the copy and acks the original on the subscription in
one transaction; after the commit the copy is delivered live like any message. On a ``disabled``
topic nothing is stored to ack, so the copy is published as a new message.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from app import codec
from app.broker.hub import Delivered
from app.broker.services import DeadLetter, NewMessage, OpResult
from app.broker.topics import TopicView
from app.pulsar import services

if TYPE_CHECKING:
    from app.broker.runtime import BrokerRuntime
    from app.pulsar.dispatcher import SubscriptionDispatcher
    from app.pulsar.members import Member, Pending

logger = logging.getLogger(__name__)

# Fields of the original the copy keeps.
KEPT = ("payload", "properties", "key")


def dead_letter_copy(text: str, topic: TopicView, principal: str) -> NewMessage:
    """The copy of the delivery frame ``text`` for the dead letter topic ``topic``."""
    original: dict[str, Any] = codec.loads(text)
    fields = {name: original[name] for name in KEPT if name in original}
    message_id = uuid.uuid4()
    now = timezone.now()
    frame = codec.dumps({**fields, "messageId": str(message_id), "publishTime": now.isoformat()})
    payload = fields.get("payload")
    return NewMessage(
        topic_id=topic.id, message_id=message_id, producer_id=None, producer_principal=principal,
        properties=fields.get("properties", {}), payload=payload if isinstance(payload, str) else None,
        context=None, publish_time=now, frame=frame,
    )


class DeadLetters:
    def __init__(self, runtime: BrokerRuntime, dispatcher: SubscriptionDispatcher) -> None:
        self.runtime = runtime
        self.dispatcher = dispatcher
        # Dead letter topics made sure of, per (slug, principal): one lookup per dispatcher.
        self._topics: dict[tuple[str, str], TopicView] = {}
        # Those that could not be found or made, until when they are not looked up again: a consumer
        # nacking in a loop must not turn each redelivery into a lookup and a WARNING.
        self._failed: dict[tuple[str, str], float] = {}

    async def move(self, item: Pending, member: Member, epoch: int) -> None:
        """Move ``item`` (taken from ``member`` in the dispatcher's ``epoch``) to ``member``'s dead
        letter topic; when that topic cannot be used (not allowed, or the database failed), ``item``
        is queued again (with a WARNING)."""
        dispatcher = self.dispatcher
        slug = member.params.dead_letter_topic(dispatcher.slug, dispatcher.subscription)
        key = (slug, member.principal)
        topic = self._topics.get(key)
        if topic is None:
            now = self.runtime.loop.time()
            if self._failed.get(key, now) > now:
                dispatcher.requeue([item], epoch)
                return
            try:
                topic = await database_sync_to_async(services.ensure_dead_letter_topic)(
                    slug, member.user, member.principal, explicit=member.params.deadLetterTopic is not None
                )
            except Exception as exc:
                # TopicError, or the database failed: a consumer leaving must not fail for it.
                retry_s: float = settings.DEAD_LETTER_RETRY_S
                logger.warning("subscription %s on %s: no dead letter topic (%s); redelivering, tried again in %s s",
                               dispatcher.subscription, dispatcher.slug, exc, retry_s)
                self._failed[key] = now + retry_s
                dispatcher.requeue([item], epoch)
                return
            self._failed.pop(key, None)
            self._topics[key] = topic
            self.runtime.rights_changed(slug)  # it may be new: every process learns it exists
        copy = dead_letter_copy(item.text, topic, member.principal)
        target = topic

        def committed(result: OpResult) -> None:
            if isinstance(result, int):
                self.runtime.deliver(target.slug, Delivered(copy.frame, str(copy.message_id),
                                                            result if target.policy.stores else None))
            else:
                logger.warning("subscription %s on %s: moving %s to %s failed (%s); redelivering",
                               dispatcher.subscription, dispatcher.slug, item.message_id, target.slug, result)
                dispatcher.requeue([item], epoch)

        if dispatcher.stores:
            self.runtime.writer.submit(DeadLetter(
                dispatcher.topic.id, dispatcher.topic.policy, dispatcher.subscription_id,
                uuid.UUID(item.message_id), member.principal, copy,
            ), committed)
        elif topic.policy.stores:
            self.runtime.writer.submit(copy, committed)
        else:
            self.runtime.deliver(topic.slug, Delivered(copy.frame, str(copy.message_id), None))
