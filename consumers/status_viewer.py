"""``/ws/status/[?topics=a,b]``: the status of the topics the user may see, ``synced``, then every change
(``gone`` for a topic deleted or hidden from the viewer)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from app import codec
from app.availability.board import SentApis
from app.availability.services import TopicStatus, statuses
from app.broker.hub import ANY_TOPIC
from app.broker.naming import topic_name_error
from app.broker.runtime import get_runtime
from consumers.base import FrameConsumer
from consumers.frames import StatusGoneFrame, StatusSyncedFrame, status_frame

RELOOK_DELAY_S = 0.2
# Topics one status socket may ask for (each is watched for rights changes).
MAX_TOPICS = 500


class StatusViewerConsumer(FrameConsumer):

    metrics_kind = "status_viewer"
    async def on_connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        asked = [s for s in query.get("topics", [""])[0].split(",") if s]
        # A name no topic may have is never visible: not looked up (PostgreSQL's text holds no NUL, so
        # one with a NUL failed the lookup and closed the socket with 1011, logging a traceback).
        names = [s for s in asked if topic_name_error(s) is None]
        if len(names) > MAX_TOPICS:
            self.refuse(f"at most {MAX_TOPICS} topics per status socket; showing the first {MAX_TOPICS}", None)
            del names[MAX_TOPICS:]
        # Only invalid names asked for: none is shown (as for missing ones), not every topic.
        self.only = set(names) if asked else None
        self.runtime = get_runtime()
        self.visible: set[str] = set()
        self.apis_sent = SentApis()
        self.synced = False
        self.relook_pending = False
        self.looking = asyncio.Lock()  # an older look must not finish last
        # Told when rights change on a topic it asked for, or on any topic when it asked for all:
        # a topic created or made visible later shows up too.
        self.watching = set(self.only) if self.only is not None else {ANY_TOPIC}
        for slug in self.watching:
            self.runtime.hub.watch(slug, self)
        await self._look()

    async def _look(self) -> None:
        """(Re)read which topics this viewer may see; send the status of newly visible ones."""
        async with self.looking:
            await self._look_now()

    async def _look_now(self) -> None:
        visible = set(await self.runtime.visible_topics(self.user, self.only))
        new, gone, self.visible = visible - self.visible, self.visible - visible, visible
        now = self.runtime.loop.time()
        current, unread = self.runtime.board.recent(new, now, settings.STATUS_REFRESH_S)
        if unread:
            read = await database_sync_to_async(statuses)(unread)
            for status in read:
                self.runtime.board.update(status, now)  # viewers shown an older one hear of it
            current.extend(read)
        for slug in sorted(gone):
            self.apis_sent.forget(slug)
            self.push_model(StatusGoneFrame(type="gone", topic=slug))
        for status in sorted(current, key=lambda s: s.slug):
            self.show(status)
        if not self.synced:
            self.synced = True
            self.push_model(StatusSyncedFrame(type="synced", topics=len(self.visible)))
        self.runtime.board.watch(self, self.visible)

    def recheck_rights(self) -> None:
        if not self.relook_pending and not self.closing:
            self.relook_pending = True
            self.spawn(self._relook_soon())

    async def _relook_soon(self) -> None:
        # A burst of changes (topics created one after another) costs one look, not one each.
        await asyncio.sleep(RELOOK_DELAY_S)
        self.relook_pending = False
        await self._look()

    async def on_disconnect(self) -> None:
        if hasattr(self, "runtime"):
            self.runtime.board.unwatch(self)
            for slug in self.watching:
                self.runtime.hub.unwatch(slug, self)

    async def on_frame(self, raw: dict[str, Any]) -> None:
        self.refuse("status sockets only send; nothing is read from them", raw)

    # The board shows one status to all its viewers in a row (every ping round moves every topic's
    # times): it is encoded once for all of them (once with its API, once without), not once per viewer.
    _encoded: ClassVar[dict[bool, tuple[TopicStatus | None, str]]] = {True: (None, ""), False: (None, "")}

    def show(self, status: TopicStatus) -> None:
        with_api = self.apis_sent.news(status)
        shown, text = StatusViewerConsumer._encoded[with_api]
        if shown is not status:
            text = codec.dump_model(status_frame(status, with_api))
            StatusViewerConsumer._encoded[with_api] = (status, text)
        self.push(text)
