"""The per-process broker state: local connections (hub), the group-commit writer, the status board,
and the backplane to the other processes."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from app.availability.board import StatusBoard
from app.broker.backplane import LocalBackplane, Receiver, make_backplane
from app.broker.commit import GroupCommitWriter
from app.broker.hub import Delivered, Hub
from app.broker.topics import TopicView, view_topic

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
        # Every open socket of this process, for revoking credentials.
        self.sockets: weakref.WeakSet[Revocable] = weakref.WeakSet()
        self.board = StatusBoard()
        self.writer = GroupCommitWriter(max_rows=settings.WRITE_BATCH_ROWS)
        # Response topics this process already made sure of: slug -> (topic id, source topic id).
        self.response_topics: dict[str, tuple[int, int]] = {}
        self.unacked_limit = settings.UNACKED_PER_CONNECTION
        # (slug, principal) -> (what a connection caches about its topic, monotonic expiry). Many
        # connections of one principal (a reconnect storm, a fleet of modules) need one lookup.
        self._views: dict[tuple[str, str], tuple[TopicView, float]] = {}
        self.loop = asyncio.get_running_loop()
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.backplane.start(self)

    async def stop(self) -> None:
        await self.writer.stop()
        await self.backplane.stop()

    async def topic_view(self, slug: str, user: Any, principal: str, *, fresh: bool = False) -> TopicView | None:
        """The topic and the principal's rights on it: cached for ``TOPIC_VIEW_TTL_S`` and dropped
        when rights on the topic change anywhere; ``fresh`` reads the database. A missing topic is
        not cached (it may be created any moment)."""
        key = (slug, principal)
        cached = self._views.get(key)
        if cached is not None and not fresh and cached[1] > self.loop.time():
            return cached[0]
        view: TopicView | None = await database_sync_to_async(view_topic)(slug, user)
        if view is None:
            self._views.pop(key, None)
        else:
            if len(self._views) >= VIEW_CACHE_SIZE:
                self._views.clear()
            self._views[key] = (view, self.loop.time() + settings.TOPIC_VIEW_TTL_S)
        return view

    def _presence(self, slug: str, present: bool) -> None:
        if present:
            self.backplane.join(slug)
        else:
            self.backplane.leave(slug)

    # --- what this process does, told to the others too ----------------------------------

    def deliver(self, slug: str, item: Delivered) -> int:
        """Hand a message to the consumers of ``slug`` everywhere; the local connections reached."""
        self.backplane.deliver(slug, item)
        return self.hub.publish(slug, item)

    def grant(self, slug: str, principal: str) -> None:
        """``principal`` may now consume ``slug``: attach its waiting connections everywhere."""
        self.backplane.grant(slug, principal)
        self.hub.grant(slug, principal)

    def credentials_revoked(self, token_id: int | None, principal: str | None) -> None:
        """A token was disabled or deleted, or a user deactivated: close their sockets everywhere."""
        self.backplane.credentials_revoked(token_id, principal)
        self.remote_credentials_revoked(token_id, principal)

    def rights_changed(self, slug: str) -> None:
        """Permissions on ``slug`` changed: every connection re-reads its rights."""
        self.backplane.rights_changed(slug)
        self.remote_rights_changed(slug)

    # --- what other processes tell us ----------------------------------------------------

    def remote_delivery(self, slug: str, item: Delivered) -> None:
        self.hub.publish(slug, item)

    def remote_grant(self, slug: str, principal: str) -> None:
        self.hub.grant(slug, principal)

    def remote_credentials_revoked(self, token_id: int | None, principal: str | None) -> None:
        for socket in list(self.sockets):
            if (token_id is not None and socket.token_id == token_id) or (
                principal is not None and socket.principal == principal
            ):
                socket.revoke("credentials revoked (token disabled or user deactivated)")

    def remote_rights_changed(self, slug: str) -> None:
        self.response_topics.pop(slug, None)
        # Cached views of the topic, and of response topics answering it (their produce right
        # comes from consuming it).
        for key, (view, _) in list(self._views.items()):
            if slug in (key[0], view.source_slug):
                del self._views[key]
        for connection in self.hub.connections(slug):
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
