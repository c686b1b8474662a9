"""``/ws/v2/consumer/<persistence>/<tenant>/<ns>/<topic>/<subscription>`` on topics that are not
``supports_dasf``: Pulsar's named subscriptions (docs/architecture.md 18.2-18.4).

The handshake is refused with an HTTP status before it is accepted (400 parameters, 401/403/404 the
topic, 409 the subscription, or an existing dead letter topic that may not take its dead letters).
With ``ALLOW_AUTO_TOPIC_CREATION`` a missing topic is created here instead of the 404
(app/pulsar/autocreation.py), after the parameters were found good. An accepted connection joins its
subscription's dispatcher (app/pulsar/dispatcher.py), which decides what it is sent; this class
translates frames.
DASF topics on this path keep ``TopicConsumer`` (consumers/pulsar_routing.py chooses).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from pydantic import ValidationError

from app.broker import quotas
from app.broker.admission import Refusal
from app.broker.models import RESERVED_TOPICS
from app.broker.naming import topic_name_error
from app.broker.runtime import get_runtime
from app.broker.services import TopicError
from app.broker.topics import TopicView
from app.pulsar.autocreation import MissingTopic, create_auto_topic, missing_topic
from app.pulsar.dispatcher import SubscriptionDispatcher
from app.pulsar.flow import permit_count
from app.pulsar.handshake import Need, topic_refusal
from app.pulsar.params import ConsumerParams, consumer_problem, params_problem, subscription_name_problem
from app.pulsar.services import dead_letter_refusal
from app.pulsar.subscriptions import subscriptions_of
from consumers.auth import client_address
from consumers.base import CLOSE_FORBIDDEN, CLOSE_INTERNAL_ERROR, FrameConsumer, describe
from consumers.frames import EndOfTopicFrame, MessageIdFrame

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000


class PulsarConsumer(FrameConsumer):

    metrics_kind = "pulsar_consumer"
    dispatcher: SubscriptionDispatcher | None = None
    # Rights changed while the handshake was pending: looked at again once accepted.
    rights_stale = False

    async def before_accept(self) -> Refusal | None:
        kwargs = self.scope["url_route"]["kwargs"]
        self.slug: str = kwargs["topic"]
        self.subscription: str = kwargs.get("subscription") or ""
        if self.slug in RESERVED_TOPICS:
            return Refusal(HTTPStatus.NOT_FOUND, f"{self.slug} is a reserved name, not a topic")
        if (problem := subscription_name_problem(self.subscription)) is not None:
            return Refusal(HTTPStatus.BAD_REQUEST, problem)
        try:
            self.params = ConsumerParams.from_query(self.scope.get("query_string", b""))
        except ValidationError as exc:
            return Refusal(HTTPStatus.BAD_REQUEST, params_problem(exc))
        self.runtime = get_runtime()
        topic = await self.runtime.topic_view(self.slug, self.user, self.principal)
        problem = consumer_problem(self.params, self.slug, self.subscription)
        if topic is None and problem is None and self._may_create():
            try:
                topic = await self._create()
            except TopicError as exc:
                return Refusal(HTTPStatus.FORBIDDEN, str(exc))
            if topic.supports_dasf:
                return Refusal(HTTPStatus.CONFLICT, f"topic {self.slug} was just created as a DASF topic; "
                                                    "connect again")
        refusal = topic_refusal(self.slug, topic, Need.CONSUME, self.scope.get("auth_error"))
        if refusal is not None:
            return refusal
        assert topic is not None
        if problem is not None:
            return Refusal(HTTPStatus.BAD_REQUEST, problem)
        if self.params.maxRedeliverCount > 0:
            dead_letter: Refusal | None = await database_sync_to_async(dead_letter_refusal)(
                self.params.dead_letter_topic(self.slug, self.subscription), self.user, self.principal,
                explicit=self.params.deadLetterTopic is not None,
            )
            if dead_letter is not None:
                return dead_letter
        self.runtime.hub.watch(self.slug, self)
        joined = await subscriptions_of(self.runtime).join(self, topic, self.subscription)
        if isinstance(joined, Refusal):
            return joined
        self.dispatcher = joined
        return None

    def _may_create(self) -> bool:
        """A missing topic: whether this handshake creates it (a consumer has no first message)."""
        decision = missing_topic(Need.CONSUME, allow_auto=settings.ALLOW_AUTO_TOPIC_CREATION, may_add_topics=False)
        return decision is MissingTopic.CREATE and topic_name_error(self.slug) is None

    async def _create(self) -> TopicView:
        """ALLOW_AUTO_TOPIC_CREATION: the topic as this principal sees it, created now unless a
        racing creator was first (its topic stands, with its own flags)."""
        creator = quotas.creator(self.principal, client_address(self.scope))
        topic: TopicView
        topic, created = await database_sync_to_async(create_auto_topic)(self.slug, self.user, creator)
        if created:
            self.runtime.grant(self.slug, self.principal)  # its other waiting connections may attach
        return topic

    async def on_connect(self) -> None:
        if self.params.consumerName:
            logger.debug("consumer %s of %s on %s attached", self.params.consumerName[:64], self.subscription,
                         self.slug)
        if self.rights_stale:
            await self._recheck_rights()  # before anything is sent
            if self.closing:
                return
        if self.dispatcher is not None:
            self.dispatcher.ready(self)

    async def on_disconnect(self) -> None:
        if hasattr(self, "runtime"):
            self.runtime.hub.unwatch(self.slug, self)
        await self._leave()

    async def _leave(self) -> None:
        dispatcher, self.dispatcher = self.dispatcher, None
        if dispatcher is not None:
            await subscriptions_of(self.runtime).leave(self, dispatcher)

    def send(self, text: str) -> None:
        """Called by the dispatcher."""
        if not self.closing:
            self.push(text)

    def evict(self, reason: str) -> None:
        """Called by the dispatcher: this process can no longer serve this consumer; it reconnects."""
        if self.closing:
            return
        if self.outbound is None:
            # The handshake is still pending: answered 503 instead (the client retries).
            self.handshake_refusal = Refusal(HTTPStatus.SERVICE_UNAVAILABLE, reason)
            self.close(CLOSE_INTERNAL_ERROR)
            return
        self.spawn(self._evict(reason))

    async def _evict(self, reason: str) -> None:
        await self._leave()
        self.refuse(reason, None)
        self.close(CLOSE_INTERNAL_ERROR)

    # --- rights ---------------------------------------------------------------------------

    def recheck_rights(self) -> None:
        if self.closing:
            return
        if self.outbound is None:
            self.rights_stale = True  # during the handshake: once accepted (on_connect)
            return
        self.spawn(self._recheck_rights())

    async def _recheck_rights(self) -> None:
        topic, read = await self.reread_topic(self.slug)
        if not read:
            await self._leave()
            self.close(CLOSE_INTERNAL_ERROR)
            return
        if self.closing or (topic is not None and topic.rights.consume):
            return
        # Revoked (or the topic deleted): nothing more goes out, what it had in flight comes back.
        await self._leave()
        if self.outbound is not None:
            self.outbound.discard()
        reason = "not allowed to consume this topic" if topic is not None else f"topic {self.slug} was deleted"
        self.refuse(reason, None)
        self.close(CLOSE_FORBIDDEN)

    # --- frames ---------------------------------------------------------------------------

    async def on_frame(self, raw: dict[str, Any]) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None or self.closing:
            return  # revoked or leaving: what it says no longer counts
        kind = raw.get("type")
        if kind is None and "type" not in raw:
            self._ack(dispatcher, raw)
        elif kind == "negativeAcknowledge":
            self._nack(dispatcher, raw)
        elif kind == "permit":
            self._permit(dispatcher, raw)
        elif kind == "isEndOfTopic":
            self.push_model(EndOfTopicFrame(endOfTopic=False))  # Switchyard never terminates a topic
        elif kind == "unsubscribe":
            await self._unsubscribe(dispatcher, raw)
        else:
            self.refuse_control_frame(raw)

    def _ack(self, dispatcher: SubscriptionDispatcher, raw: dict[str, Any]) -> None:
        ack = self.read_ack(raw)
        if ack is None:
            return
        if not dispatcher.ack(self, ack.messageId):
            self.refuse(f"unknown messageId {ack.messageId[:64]}", raw)

    def _nack(self, dispatcher: SubscriptionDispatcher, raw: dict[str, Any]) -> None:
        try:
            nack = MessageIdFrame.model_validate(raw)
        except ValidationError as exc:
            self.refuse(f"invalid negativeAcknowledge: {describe(exc)}", raw)
            return
        if not dispatcher.nack(self, nack.messageId):
            self.refuse(f"unknown messageId {nack.messageId[:64]}", raw)

    def _permit(self, dispatcher: SubscriptionDispatcher, raw: dict[str, Any]) -> None:
        if not self.params.pullMode:
            self.refuse("permit frames are read in pull mode only (pullMode=true)", raw)
            return
        count = permit_count(raw)
        if count is None:
            self.refuse("permitMessages must be a positive integer", raw)
            return
        dispatcher.permit(self, count)

    async def _unsubscribe(self, dispatcher: SubscriptionDispatcher, raw: dict[str, Any]) -> None:
        problem = await subscriptions_of(self.runtime).unsubscribe(self, dispatcher)
        if problem is not None:
            self.refuse(problem, raw)
            return
        self.close(CLOSE_NORMAL)
