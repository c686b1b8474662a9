"""This process's subscription dispatchers: who may join one, when it serves, when it stops
(docs/architecture.md 18.3).

A subscription is served by one process at a time: the holder of the lease
``sub:<topic id>:<subscription id>``, taken by its first consumer, renewed every
``SUBSCRIPTION_LEASE_S / 3`` and released when its last consumer leaves. An ``Exclusive`` consumer on
a process that cannot take the lease is refused (409); other types wait there as standbys, trying
the lease every renewal period, and are served once their process holds it. The cursor is in the
database only, so a process that takes a subscription over starts from what is stored.

A subscription belongs to the principal that created it: another principal's consumer is refused
(403) unless it is a superuser's. A dispatcher that is closing (its last consumer left, or it was
unsubscribed) takes no new consumer: a joining one waits until it is gone and starts a new one.
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
from app.pulsar.handshake import subscription_conflict, subscription_owner_refusal
from app.pulsar.members import Member
from app.pulsar.services import lease_name

if TYPE_CHECKING:
    from app.broker.runtime import BrokerRuntime

logger = logging.getLogger(__name__)

HOLDER = f"{socket.gethostname()}:{os.getpid()}"

__all__ = ["HOLDER", "Subscriptions", "lease_name", "subscriptions_of"]


def owner_refusal(dispatcher: SubscriptionDispatcher, member: Member) -> Refusal | None:
    return subscription_owner_refusal(dispatcher.subscription, dispatcher.owner, member.principal,
                                      bool(getattr(member.user, "is_superuser", False)))


class Subscriptions:
    def __init__(self, runtime: BrokerRuntime) -> None:
        self.runtime = runtime
        self._served: dict[tuple[int, str], SubscriptionDispatcher] = {}

    def __len__(self) -> int:
        return len(self._served)

    async def join(self, member: Member, topic: TopicView, name: str) -> SubscriptionDispatcher | Refusal:
        """Attach ``member`` (not yet accepted) to subscription ``name``, or say why not (403, 409)."""
        key = (topic.id, name)
        while (dispatcher := self._served.get(key)) is not None and (dispatcher.closing or dispatcher.deleted):
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
        if refusal is None:
            refusal = owner_refusal(dispatcher, member)
        if refusal is not None:
            await self.leave(member, dispatcher)
            return refusal
        return dispatcher

    async def _start(self, dispatcher: SubscriptionDispatcher, first: Member) -> Refusal | None:
        try:
            state = await database_sync_to_async(services.open_subscription)(
                dispatcher.topic.id, dispatcher.subscription, dispatcher.type, first.principal, first.user
            )
        except services.SubscriptionRefused as exc:
            return Refusal(HTTPStatus.FORBIDDEN, str(exc))
        dispatcher.subscription_id = state.id
        dispatcher.owner = state.created_by
        refusal = owner_refusal(dispatcher, first)
        if refusal is not None:
            return refusal
        name = lease_name(dispatcher.topic.id, state.id)
        held = await self._acquire(dispatcher, name)
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
        if dispatcher.serving:
            return
        self.runtime.hub.subscribe(dispatcher.slug, dispatcher)
        if dispatcher.stores:
            # Live messages from other processes come from here on: the backlog read covers the rest.
            await self.runtime.backplane.joined(dispatcher.slug)
            # Acks a consumer of this subscription sent a moment ago (say, just before it
            # reconnected) are committed before the backlog is read, or they would come again.
            await self.runtime.writer.flush()
        dispatcher.start_serving(acked_through)

    async def _take_over(self, dispatcher: SubscriptionDispatcher) -> None:
        """The lease is taken after standing by: serve from the stored cursor, unless the subscription
        was deleted meanwhile (and maybe made anew): then its consumers reconnect (1011) and attach
        to what is there now; nothing is acked against a deleted subscription."""
        state = await database_sync_to_async(services.find_subscription)(dispatcher.topic.id, dispatcher.subscription)
        if state is None or state.id != dispatcher.subscription_id:
            await self._gone(dispatcher)
            return
        await self._serve(dispatcher, state.acked_through)

    async def _gone(self, dispatcher: SubscriptionDispatcher) -> None:
        """The subscription was deleted (by another process, or collected): nothing more is served or
        acked against its id; its consumers reconnect (1011) and attach to what is there now."""
        dispatcher.deleted = True
        if dispatcher.serving:
            self.runtime.hub.unsubscribe(dispatcher.slug, dispatcher)
            dispatcher.stand_by()
        dispatcher.evict_all("the subscription was deleted on another server; reconnect")
        # Its row goes: nothing stops this dispatcher's keeper any more, and nobody else asks.
        await database_sync_to_async(release)(lease_name(dispatcher.topic.id, dispatcher.subscription_id), HOLDER)

    async def _acquire(self, dispatcher: SubscriptionDispatcher, name: str) -> bool:
        """Take or renew the lease; when held, the dispatcher's deadline counts from before the call."""
        started = self.runtime.loop.time()
        held: bool = await database_sync_to_async(acquire)(name, HOLDER, settings.SUBSCRIPTION_LEASE_S)
        if held:
            dispatcher.lease.renewed(started)
        return held

    async def _keep_lease(self, dispatcher: SubscriptionDispatcher, name: str) -> None:
        """Renew the lease while serving (and touch the subscription: it has consumers, so it does
        not expire), try to take it while standing by. Renewals are a third of the lease apart from
        start to start, so a slow one does not push the next one towards the deadline. Should they
        fail (or the process be paused) until the deadline, the dispatcher stands by by itself."""
        period = settings.SUBSCRIPTION_LEASE_S / 3
        loop = self.runtime.loop
        next_at = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if dispatcher.deleted:
                return  # unsubscribed, or deleted by another process: its consumers are leaving
            next_at = loop.time() + period
            try:
                held = await self._acquire(dispatcher, name)
                if held and dispatcher.serving:
                    touched = await database_sync_to_async(services.touch)([dispatcher.subscription_id])
                    if not touched and not dispatcher.deleted:  # (not by this process's unsubscribe)
                        await self._gone(dispatcher)
                elif held and not dispatcher.deleted and dispatcher.started is not None and dispatcher.started.done():
                    # (While the first consumer's start is still under way, it is the one to serve.)
                    await self._take_over(dispatcher)
                elif not held and dispatcher.serving:
                    dispatcher.lose_lease("another process holds its lease")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("lease %s of subscription %s on %s", name, dispatcher.subscription, dispatcher.slug)

    async def leave(self, member: Member, dispatcher: SubscriptionDispatcher) -> None:
        """``member`` is gone; the last one to leave stops the dispatcher and releases the lease, even
        when putting back what it held failed (else joining consumers would wait for good)."""
        try:
            await dispatcher.remove(member)
        finally:
            if dispatcher.closing and not dispatcher.slots:
                await self._stop(dispatcher)

    async def _stop(self, dispatcher: SubscriptionDispatcher, *, forget: bool = True) -> None:
        """Stop the dispatcher (its last consumer left, or it was unsubscribed); once is enough.
        ``forget``: let joining consumers start a new one now (else the caller does, later)."""
        dispatcher.closing = True
        if dispatcher.stopped:
            return
        dispatcher.stopped = True
        try:
            dispatcher.serving = False
            dispatcher.lease.cancel()
            self.runtime.hub.unsubscribe(dispatcher.slug, dispatcher)
            started = dispatcher.started
            if started is not None and not started.done():
                started.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await started
            await dispatcher.stop_tasks()
            if dispatcher.subscription_id and not dispatcher.deleted:
                # Touched while the lease is held: released first, it could expire in between.
                await database_sync_to_async(services.touch)([dispatcher.subscription_id])
                name = lease_name(dispatcher.topic.id, dispatcher.subscription_id)
                await database_sync_to_async(release)(name, HOLDER)
        except Exception:
            logger.exception("stopping subscription %s on %s", dispatcher.subscription, dispatcher.slug)
        finally:
            if forget:
                self._forget(dispatcher)

    def _forget(self, dispatcher: SubscriptionDispatcher) -> None:
        """A consumer joining from now on starts a new dispatcher."""
        key = (dispatcher.topic.id, dispatcher.subscription)
        if self._served.get(key) is dispatcher:
            del self._served[key]
        dispatcher.closed.set()

    async def unsubscribe(self, member: Member, dispatcher: SubscriptionDispatcher) -> str | None:
        """Delete the subscription (its cursor and what it held); a reason when it cannot be: other
        consumers attached here, or it is served by another process (this one is a standby: its
        consumers there would go on acking a deleted subscription)."""
        others = len(dispatcher.slots) - 1
        if others > 0:
            return f"subscription {dispatcher.subscription} has {others} other consumer(s); not deleted"
        if dispatcher.lease_lapsed:
            # Paused past its lease: another process may serve (and be acked on) it now.
            dispatcher.lose_lease("its lease ran out before it was renewed")
        if not dispatcher.serving or dispatcher.closing:
            return f"subscription {dispatcher.subscription} has consumers attached on another server; not deleted"
        # Before the first await: nobody joins this dispatcher any more (a consumer joining now waits
        # for the deletion, then starts the subscription anew).
        dispatcher.deleted = dispatcher.closing = True
        dispatcher.queue.clear()
        try:
            await self._stop(dispatcher, forget=False)
            await database_sync_to_async(services.delete_subscription)(dispatcher.subscription_id)
            name = lease_name(dispatcher.topic.id, dispatcher.subscription_id)
            await database_sync_to_async(release)(name, HOLDER)
        finally:
            self._forget(dispatcher)
        return None


_registries: weakref.WeakKeyDictionary[BrokerRuntime, Subscriptions] = weakref.WeakKeyDictionary()


def subscriptions_of(runtime: BrokerRuntime) -> Subscriptions:
    """The registry of ``runtime`` (one per running event loop, as the runtime)."""
    registry = _registries.get(runtime)
    if registry is None:
        registry = _registries[runtime] = Subscriptions(runtime)
    return registry
