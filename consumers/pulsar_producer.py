"""Producer sockets on ``/ws/v2/producer/<persistence>/<tenant>/<ns>/<topic>``.

A topic that is not ``supports_dasf`` gets Pulsar's handshake: refused before accept with an HTTP
status (400 bad parameters, 401, 403, 404, 409 ``producerName`` in use), created there when
``ALLOW_AUTO_TOPIC_CREATION`` is on, and a named producer holds its name for its life. DASF topics,
and missing topics that today's rule lets the first message create (as a DASF topic), are accepted
as on the DASF path. Frames are handled by ``TopicProducer`` (docs/architecture.md 18.2, 18.4).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

from channels.db import database_sync_to_async
from django.conf import settings
from pydantic import ValidationError

from app.auth.services import ANONYMOUS_PRINCIPAL
from app.broker import quotas
from app.broker.admission import Refusal
from app.broker.naming import shown, topic_name_error
from app.broker.permissions import may_add_topics
from app.broker.runtime import get_runtime
from app.broker.services import TopicError
from app.broker.topics import TopicView
from app.leases.services import acquire, release
from app.pulsar.autocreation import MissingTopic, create_auto_topic, missing_topic
from app.pulsar.handshake import Need, topic_refusal
from app.pulsar.params import params_problem
from app.pulsar.producers import ProducerParams, new_lease_holder, producer_lease_name, renew_interval_s
from app.pulsar.semantics import PathShape
from consumers.auth import client_address
from consumers.base import CLOSE_NAME_TAKEN
from consumers.producer import TopicProducer
from consumers.pulsar_routing import named_like_a_response_topic

logger = logging.getLogger(__name__)


class PulsarProducer(TopicProducer):

    metrics_kind = "pulsar_producer"
    def __init__(self) -> None:
        super().__init__(PathShape.PULSAR)
        # (lease name, holder) while this connection holds its producerName.
        self.name_lease: tuple[str, str] | None = None

    async def before_accept(self) -> Refusal | None:
        slug: str = self.scope["url_route"]["kwargs"]["topic"]
        reason = topic_name_error(slug)
        if reason is not None:
            return Refusal(HTTPStatus.NOT_FOUND, reason)
        runtime = get_runtime()
        topic = await runtime.topic_view(slug, self.user, self.principal)
        if topic is not None and topic.supports_dasf:
            return None  # a DASF topic: today's behaviour, whatever the query says
        if topic is None:
            anonymous = self.principal == ANONYMOUS_PRINCIPAL
            allow_auto: bool = settings.ALLOW_AUTO_TOPIC_CREATION
            response_shaped = await named_like_a_response_topic(runtime, slug, self.user, self.principal)
            may_add = not allow_auto and not anonymous and await database_sync_to_async(may_add_topics)(self.user)
            decision = missing_topic(Need.PRODUCE, allow_auto=allow_auto, may_add_topics=may_add,
                                     response_shaped=response_shaped)
            if decision is MissingTopic.ON_FIRST_MESSAGE:
                return None
            if decision is MissingTopic.REFUSE:
                return Refusal(HTTPStatus.NOT_FOUND, f"topic {shown(slug)} does not exist")
        try:
            params = ProducerParams.from_query(self.scope.get("query_string", b""))
        except ValidationError as exc:
            return Refusal(HTTPStatus.BAD_REQUEST, params_problem(exc))
        if topic is None:
            try:
                topic = await self._create(slug)
            except TopicError as exc:
                return Refusal(HTTPStatus.FORBIDDEN, str(exc))
            if topic.supports_dasf:
                return None  # created meanwhile by today's rule
        refusal = topic_refusal(slug, topic, Need.PRODUCE, self.scope.get("auth_error"))
        if refusal is not None or params.producerName is None:
            return refusal
        return await self._take_name(topic, params.producerName)

    async def _create(self, slug: str) -> TopicView:
        """ALLOW_AUTO_TOPIC_CREATION: the topic as this principal sees it, created now unless a
        racing creator was first."""
        creator = quotas.creator(self.principal, client_address(self.scope))
        topic: TopicView
        topic, created = await database_sync_to_async(create_auto_topic)(slug, self.user, creator)
        if created:
            get_runtime().grant(slug, self.principal)  # its waiting consumers may attach now
        return topic

    async def _take_name(self, topic: TopicView, name: str) -> Refusal | None:
        lease = (producer_lease_name(topic.id, name), new_lease_holder())
        if not await database_sync_to_async(acquire)(*lease, settings.PRODUCER_NAME_LEASE_S):
            return Refusal(HTTPStatus.CONFLICT, f"producerName {shown(name)!r} is in use on topic {topic.slug}")
        self.name_lease = lease
        return None

    async def on_connect(self) -> None:
        await super().on_connect()
        if self.name_lease is not None:
            self.spawn(self._keep_name(self.name_lease))

    async def _keep_name(self, lease: tuple[str, str]) -> None:
        """Renew the producerName lease while the connection lives. Should another holder have it
        (this process could not renew for a whole term), this producer is no longer the name's
        only one: it is closed with 4409."""
        lease_s: float = settings.PRODUCER_NAME_LEASE_S
        while True:
            await asyncio.sleep(renew_interval_s(lease_s))
            if self.name_lease is None:
                return  # released by on_disconnect (which runs before this task is cancelled)
            try:
                held = await database_sync_to_async(acquire)(*lease, lease_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("renewing the producer lease %s failed; retrying", lease[0], exc_info=True)
                continue
            if not held:
                logger.warning("producer lease %s was taken over; closing with %d", lease[0], CLOSE_NAME_TAKEN)
                self.name_lease = None
                self.close(CLOSE_NAME_TAKEN)
                return

    async def on_disconnect(self) -> None:
        await super().on_disconnect()
        lease, self.name_lease = self.name_lease, None
        if lease is None:
            return
        # A renewal already submitted runs first: database calls share one thread, in order.
        try:
            await database_sync_to_async(release)(*lease)
        except Exception:
            logger.warning("could not release the producer lease %s; it expires within %s s", lease[0],
                           settings.PRODUCER_NAME_LEASE_S, exc_info=True)
