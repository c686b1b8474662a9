"""The per-process broker state: local connections (hub), the group-commit writer, the status board,
the backplane to the other processes, and what this process knows without asking the database
(topic views, the topic directory, checked credentials, connection-rate limits)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from app.auth.credentials import CredentialCache
from app.availability.answers import AnswerWrites
from app.availability.attach_pings import AttachPings
from app.availability.board import StatusBoard
from app.availability.services import visible_topics
from app.broker.admission import Admission, RateLimiter
from app.broker.announcements import Change
from app.broker.backplane import LocalBackplane, Receiver, make_backplane
from app.broker.commit import GroupCommitWriter
from app.broker.directory import TopicDirectory
from app.broker.hub import Delivered, Hub
from app.broker.models import Announcement
from app.broker.replays import ReplayReads
from app.broker.topics import TopicView, ViewCache, view_topic
from app.server.metrics import TALLY
from app.work import push
from app.work.feed import WorkFeed
from app.work.fleet import Fleet

logger = logging.getLogger(__name__)


class Revocable(Protocol):
    token_id: int | None
    principal: str

    def revoke(self, reason: str) -> None: ...


VIEW_CACHE_SIZE = 100_000


class BrokerRuntime(Receiver):
    def __init__(self) -> None:
        self.backplane: LocalBackplane = make_backplane()
        self.hub = Hub(on_presence=self._presence)
        # The workers connected here (/ws/workers/), told of work made runnable anywhere.
        self.fleet = Fleet(self.backplane)
        # Every open socket of this process, for revoking credentials.
        self.sockets: weakref.WeakSet[Revocable] = weakref.WeakSet()
        self.board = StatusBoard()
        self.writer = GroupCommitWriter(max_rows=settings.WRITE_BATCH_ROWS, limit_bytes=settings.WRITE_QUEUE_BYTES)
        self.replays = ReplayReads()
        # Response topics this process already made sure of for a requesting principal:
        # slug -> principal -> (topic id, source topic id).
        self.response_topics: dict[str, dict[str, tuple[int, int]]] = {}
        self.unacked_limit = settings.UNACKED_PER_CONNECTION
        self._views = ViewCache(VIEW_CACHE_SIZE)
        self.directory = TopicDirectory()
        self.credentials = CredentialCache(settings.AUTH_CACHE_TTL_S)
        self.admission = Admission(
            per_address=RateLimiter(settings.CONNECT_RATE_PER_ADDRESS_PER_S, settings.CONNECT_BURST_PER_ADDRESS),
            per_principal=RateLimiter(
                settings.CONNECT_RATE_PER_PRINCIPAL_PER_S, settings.CONNECT_BURST_PER_PRINCIPAL
            ),
            failed_lookups=RateLimiter(
                settings.FAILED_AUTH_RATE_PER_ADDRESS_PER_S, settings.FAILED_AUTH_BURST_PER_ADDRESS
            ),
            max_per_address=settings.MAX_CONNECTIONS_PER_ADDRESS,
            max_per_principal=settings.MAX_CONNECTIONS_PER_PRINCIPAL,
        )
        # The source topics anonymous status viewers may see, with its expiry; one read shared by
        # every anonymous viewer connecting meanwhile.
        self._anonymous_visible: tuple[list[str], float] | None = None
        self._anonymous_reading: asyncio.Task[list[str]] | None = None
        # Topic view reads in progress, per (slug, principal, rights generation).
        self._view_reads: dict[tuple[str, str, int], asyncio.Task[TopicView | None]] = {}
        self._rights_generation = 0
        # Set by the announcement loop once its first read has been applied: returns when every
        # change announced so far has been applied here (the topic directory is trusted only then).
        self.catch_up: Callable[[], Awaitable[None]] | None = None
        self.loop = asyncio.get_running_loop()
        self._started = False
        # Pongs and api_info answers worth a database write (app/availability/answers.py).
        self.answer_writes = AnswerWrites(settings.PONG_WRITE_MIN_INTERVAL_S)
        # Topics to ping because a consumer attached, sent by relays/ping.py; None when
        # this process does not ping (PING_INTERVAL_S = 0).
        self.attach_pings = (
            AttachPings(settings.ATTACH_PING_MIN_INTERVAL_S) if settings.PING_INTERVAL_S > 0 else None
        )
        self.attach_ping_requested = asyncio.Event()
        # This process's /ws/work-requests/ watchers, fed by relays/work_feed.py.
        self.work_feed = WorkFeed()

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.backplane.start(self)
            push.listen(self.fleet, self.loop)

    async def stop(self) -> None:
        push.unlisten(self.fleet)
        reading = set(self._view_reads.values())
        for task in reading:
            task.cancel()
        if reading:
            await asyncio.wait(reading)
        await self.replays.stop()
        await self.writer.stop()
        await self.backplane.stop()

    async def topic_view(self, slug: str, user: Any, principal: str, *, fresh: bool = False) -> TopicView | None:
        """The topic and the principal's rights on it: cached for ``TOPIC_VIEW_TTL_S`` and dropped
        when rights on the topic change anywhere; a name the directory knows is no topic costs no
        query. ``fresh`` reads the database (after a change was announced)."""
        if not fresh:
            cached = self._views.get(slug, principal, self.loop.time())
            if cached is not None:
                return cached
            # Without a reader to catch up with (its first read, which loads the directory, still
            # running or failed; shutting down) the directory may lack a topic created a moment ago
            # elsewhere: the database answers.
            if self.catch_up is not None and self.directory.missing(slug):
                await self.catch_up()  # created a moment ago elsewhere?
                if self.directory.missing(slug):
                    return None
            # Connections of one principal attaching together (a reconnect storm) share one read;
            # one started before a rights change is not shared after it.
            key = (slug, principal, self._rights_generation)
            reading = self._view_reads.get(key)
            if reading is None:
                reading = self.loop.create_task(self._read_view(slug, user, principal))
                self._view_reads[key] = reading
                reading.add_done_callback(partial(self._view_read_done, key))
            return await asyncio.shield(reading)
        return await self._read_view(slug, user, principal)

    def _view_read_done(self, key: tuple[str, str, int], task: asyncio.Task[TopicView | None]) -> None:
        self._view_reads.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone before a failure

    async def _read_view(self, slug: str, user: Any, principal: str) -> TopicView | None:
        generation = self._rights_generation
        view: TopicView | None = await database_sync_to_async(view_topic)(slug, user)
        if generation != self._rights_generation:
            return view  # something changed while we read: use this answer once, remember nothing
        self.directory.found(slug, view is not None)
        if view is None:
            self._views.forget(slug, principal)
        else:
            self._views.put(view, principal, self.loop.time() + settings.TOPIC_VIEW_TTL_S)
        return view

    async def visible_topics(self, user: Any, only: set[str] | None) -> list[str]:
        """Source topics whose status ``user`` may see (all of them, or those in ``only``).
        Anonymous viewers share one cached read, dropped when rights change anywhere."""
        if getattr(user, "is_authenticated", False):
            return list(await database_sync_to_async(visible_topics)(user, only))
        if self.catch_up is not None:
            await self.catch_up()  # a topic created or made public a moment ago elsewhere
        slugs = await self._anonymous_slugs()
        return slugs if only is None else [slug for slug in slugs if slug in only]

    async def _anonymous_slugs(self) -> list[str]:
        cached = self._anonymous_visible
        if cached is not None and cached[1] > self.loop.time():
            return cached[0]
        if self._anonymous_reading is None:
            self._anonymous_reading = self.loop.create_task(self._read_anonymous_visible(AnonymousUser()))
            # Retrieved here too: every waiter may have gone before a failure.
            self._anonymous_reading.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._anonymous_reading)

    async def _read_anonymous_visible(self, user: Any) -> list[str]:
        generation = self._rights_generation
        try:
            slugs: list[str] = await database_sync_to_async(visible_topics)(user, None)
            if generation == self._rights_generation:  # else rights changed while we read
                self._anonymous_visible = (slugs, self.loop.time() + settings.TOPIC_VIEW_TTL_S)
            return slugs
        finally:
            self._anonymous_reading = None

    def known_response_topic(self, slug: str, principal: str) -> tuple[int, int] | None:
        return self.response_topics.get(slug, {}).get(principal)

    def remember_response_topic(self, slug: str, principal: str, ids: tuple[int, int]) -> None:
        if len(self.response_topics) >= VIEW_CACHE_SIZE:
            self.response_topics.clear()
        self.response_topics.setdefault(slug, {})[principal] = ids

    def request_attach_ping(self, slug: str, topic_id: int) -> None:
        """A consumer attached to ``slug``: ping the topic soon, unless it answered its latest ping (no I/O here;
        the ping loop writes and sends, so the attach does not wait for the database)."""
        if self.attach_pings is not None:
            self.attach_pings.request(slug, topic_id, self.loop.time())
            self.attach_ping_requested.set()

    def _presence(self, slug: str, present: bool) -> None:
        if present:
            self.backplane.join(slug)
        else:
            self.backplane.leave(slug)

    # --- what this process does, told to the others too ----------------------------------

    def deliver(self, slug: str, item: Delivered) -> int:
        """Hand a message to the consumers of ``slug`` everywhere; the local connections reached."""
        self.backplane.deliver(slug, item)
        reached = self.hub.publish(slug, item)
        TALLY.deliveries += reached
        return reached

    def grant(self, slug: str, principal: str) -> None:
        """``principal`` may now consume ``slug``: attach its waiting connections everywhere."""
        self.backplane.grant(slug, principal)
        self.remote_grant(slug, principal)

    def credentials_revoked(self, token_id: int | None, principal: str | None) -> None:
        """A token was disabled or deleted, or a user deactivated: close their sockets everywhere."""
        self.backplane.credentials_revoked(token_id, principal)
        self.remote_credentials_revoked(token_id, principal)

    def rights_changed(self, slug: str, *, exists: bool = True, response: bool = False) -> None:
        """``slug`` was created, changed or deleted, or permissions on it changed: every
        connection re-reads its rights."""
        self.backplane.rights_changed(slug, exists=exists, response=response)
        self.remote_rights_changed(slug, exists=exists, response=response)

    def apply(self, change: Change) -> None:
        """An announcement another process made (read from the database)."""
        if change.kind == Announcement.RIGHTS:
            self.remote_rights_changed(change.slug, exists=change.exists, response=change.response)
        elif change.kind == Announcement.REVOKED:
            self.remote_credentials_revoked(change.token_id, change.principal or None)

    # --- what other processes tell us ----------------------------------------------------

    def remote_delivery(self, slug: str, item: Delivered) -> None:
        TALLY.deliveries += self.hub.publish(slug, item)

    def remote_grant(self, slug: str, principal: str) -> None:
        self.directory.found(slug, True)
        self.hub.grant(slug, principal)

    def remote_credentials_revoked(self, token_id: int | None, principal: str | None) -> None:
        self.credentials.revoke(token_id, principal)
        for socket in list(self.sockets):
            if (token_id is not None and socket.token_id == token_id) or (
                principal is not None and socket.principal == principal
            ):
                socket.revoke("credentials revoked (token disabled or user deactivated)")

    def remote_work_runnable(self) -> None:
        self.fleet.remote_work_runnable()

    def remote_work_aborted(self, request_id: int, worker_id: int) -> None:
        self.fleet.remote_work_aborted(request_id, worker_id)

    def remote_worker_connected(self, worker_id: int, connected_at: float) -> None:
        self.fleet.remote_worker_connected(worker_id, connected_at)

    def remote_rights_changed(self, slug: str, *, exists: bool = True, response: bool = False) -> None:
        self.directory.found(slug, exists)
        self.response_topics.pop(slug, None)
        self._rights_generation += 1
        self._views.drop(slug)
        if not response:  # status viewers list source topics only
            self._anonymous_visible = None
        for connection in self.hub.connections(slug, every_topic=not response):
            connection.recheck_rights()


_runtime: BrokerRuntime | None = None


def get_runtime() -> BrokerRuntime:
    """The runtime of the running event loop (a new loop, as in tests, gets a new one)."""
    global _runtime
    if _runtime is None or _runtime.loop is not asyncio.get_running_loop():
        _runtime = BrokerRuntime()
    return _runtime


def running_runtime() -> BrokerRuntime | None:
    """The runtime of this process, if it serves (for signal handlers in other threads)."""
    return _runtime


async def stop_runtime() -> None:
    global _runtime
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        await runtime.stop()
