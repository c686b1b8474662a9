"""This process's subscription dispatchers: who may join one, when it serves, when it stops
(docs/architecture.md 18.3).

A subscription is served by one process at a time: the holder of the lease
``sub:<topic id>:<subscription id>``, taken by its first consumer, renewed every
``SUBSCRIPTION_LEASE_S / 3`` and released when its last consumer leaves. An ``Exclusive`` consumer on
a process that cannot take the lease is refused (409); other types wait there as standbys, trying
the lease every renewal period, and are served once their process holds it. The cursor is in the
database only, so a process that takes a subscription over starts from what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import weakref
from http import HTTPStatus
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.conf import settings

from app.broker.admission import Refusal
from app.broker.topics import TopicView
from app.leases.services import acquire, release
from app.pulsar import services
from app.pulsar.dispatch import EXCLUSIVE
from app.pulsar.dispatcher import SubscriptionDispatcher
from app.pulsar.handshake import subscription_conflict
from app.pulsar.members import Member

if TYPE_CHECKING:
    from app.broker.runtime import BrokerRuntime

logger = logging.getLogger(__name__)

HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def lease_name(topic_id: int, subscription_id: int) -> str:
    # The id, not the name: a lease name has at most 64 characters, a subscription name 200.
    return f"sub:{topic_id}:{subscription_id}"


class Subscriptions:
    def __init__(self, runtime: BrokerRuntime) -> None:
        self.runtime = runtime
        self._served: dict[tuple[int, str], SubscriptionDispatcher] = {}

    def __len__(self) -> int:
        return len(self._served)

    async def join(self, member: Member, topic: TopicView, name: str) -> SubscriptionDispatcher | Refusal:
        """Attach ``member`` (not yet accepted) to subscription ``name``, or say why not (409)."""
        key = (topic.id, name)
        while (dispatcher := self._served.get(key)) is not None and dispatcher.closing:
            await dispatcher.closed.wait()
        wanted = member.params.subscriptionType
        if dispatcher is None:
            dispatcher = SubscriptionDispatcher(self.runtime, topic, name, wanted)
            self._served[key] = dispatcher
            dispatcher.add(member)
            dispatcher.started = self.runtime.loop.create_task(self._start(dispatcher, member))
        else:
            refusal = subscription_conflict(name, wanted, dispatcher.type, len(dispatcher.slots))
            if refusal is not None:
                return refusal
            dispatcher.add(member)
        assert dispatcher.started is not None
        try:
            refusal = await asyncio.shield(dispatcher.started)
        except BaseException:
            await self.leave(member, dispatcher)
            raise
        if refusal is not None:
            await self.leave(member, dispatcher)
            return refusal
        return dispatcher

    async def _start(self, dispatcher: SubscriptionDispatcher, first: Member) -> Refusal | None:
        state = await database_sync_to_async(services.open_subscription)(
            dispatcher.topic.id, dispatcher.subscription, dispatcher.type, first.principal
        )
        dispatcher.subscription_id = state.id
        name = lease_name(dispatcher.topic.id, state.id)
        held = await database_sync_to_async(acquire)(name, HOLDER, settings.SUBSCRIPTION_LEASE_S)
        if not held and (dispatcher.type == EXCLUSIVE or state.type != dispatcher.type):
            why = "has a consumer" if state.type == EXCLUSIVE else f"has {state.type} consumers"
            return Refusal(HTTPStatus.CONFLICT, f"subscription {dispatcher.subscription} {why} on another server")
        if held and state.type != dispatcher.type:
            # Nobody is attached anywhere (we hold the lease and had no consumer): the type changes.
            await database_sync_to_async(services.set_subscription_type)(state.id, dispatcher.type)
        dispatcher.spawn(self._keep_lease(dispatcher, name))
        if held:
            await self._serve(dispatcher, state.acked_through)
        return None

    async def _serve(self, dispatcher: SubscriptionDispatcher, acked_through: int) -> None:
        """This process holds the lease: dispatch from the cursor on."""
        self.runtime.hub.subscribe(dispatcher.slug, dispatcher)
        if dispatcher.stores:
            # Live messages from other processes come from here on: the backlog read covers the rest.
            await self.runtime.backplane.joined(dispatcher.slug)
        dispatcher.start_serving(acked_through)

    def _stand_by(self, dispatcher: SubscriptionDispatcher) -> None:
        """The lease was lost (this process could not renew it in time): another process serves
        now; what was in flight here is redelivered there."""
        logger.warning("subscription %s on %s: lease lost, standing by", dispatcher.subscription, dispatcher.slug)
        self.runtime.hub.unsubscribe(dispatcher.slug, dispatcher)
        dispatcher.stand_by()

    async def _keep_lease(self, dispatcher: SubscriptionDispatcher, name: str) -> None:
        """Renew the lease while serving, try to take it while standing by."""
        period = settings.SUBSCRIPTION_LEASE_S / 3
        while True:
            await asyncio.sleep(period)
            try:
                held = await database_sync_to_async(acquire)(name, HOLDER, settings.SUBSCRIPTION_LEASE_S)
                if held and not dispatcher.serving:
                    state = await database_sync_to_async(services.open_subscription)(
                        dispatcher.topic.id, dispatcher.subscription, dispatcher.type,
                        dispatcher.slots[0].member.principal if dispatcher.slots else "",
                    )
                    await self._serve(dispatcher, state.acked_through)
                elif not held and dispatcher.serving:
                    self._stand_by(dispatcher)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("lease %s of subscription %s on %s", name, dispatcher.subscription, dispatcher.slug)

    async def leave(self, member: Member, dispatcher: SubscriptionDispatcher) -> None:
        """``member`` is gone; the last one to leave stops the dispatcher and releases the lease."""
        await dispatcher.remove(member)
        if dispatcher.slots or dispatcher.closing:
            return
        dispatcher.closing = True
        try:
            dispatcher.serving = False
            self.runtime.hub.unsubscribe(dispatcher.slug, dispatcher)
            started = dispatcher.started
            if started is not None and not started.done():
                started.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await started
            await dispatcher.stop_tasks()
            if dispatcher.subscription_id and not dispatcher.deleted:
                name = lease_name(dispatcher.topic.id, dispatcher.subscription_id)
                await database_sync_to_async(release)(name, HOLDER)
                await database_sync_to_async(services.touch)([dispatcher.subscription_id])
        except Exception:
            logger.exception("stopping subscription %s on %s", dispatcher.subscription, dispatcher.slug)
        finally:
            if self._served.get((dispatcher.topic.id, dispatcher.subscription)) is dispatcher:
                del self._served[(dispatcher.topic.id, dispatcher.subscription)]
            dispatcher.closed.set()

    async def unsubscribe(self, member: Member, dispatcher: SubscriptionDispatcher) -> str | None:
        """Delete the subscription (its cursor and what it held); a reason when it cannot be."""
        others = len(dispatcher.slots) - 1
        if others > 0:
            return f"subscription {dispatcher.subscription} has {others} other consumer(s); not deleted"
        dispatcher.deleted = True
        dispatcher.queue.clear()
        await database_sync_to_async(services.delete_subscription)(dispatcher.subscription_id)
        name = lease_name(dispatcher.topic.id, dispatcher.subscription_id)
        await database_sync_to_async(release)(name, HOLDER)
        return None


_registries: weakref.WeakKeyDictionary[BrokerRuntime, Subscriptions] = weakref.WeakKeyDictionary()


def subscriptions_of(runtime: BrokerRuntime) -> Subscriptions:
    """The registry of ``runtime`` (one per running event loop, as the runtime)."""
    registry = _registries.get(runtime)
    if registry is None:
        registry = _registries[runtime] = Subscriptions(runtime)
    return registry
