"""``/ws/status/[?topics=a,b]``: the status of the topics the user may see, then every change."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from app.availability.services import TopicStatus, statuses
from app.broker.runtime import get_runtime
from consumers.base import FrameConsumer
from consumers.frames import StatusFrame


class StatusViewerConsumer(FrameConsumer):
    async def on_connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.only = {s for s in query.get("topics", [""])[0].split(",") if s} or None
        self.runtime = get_runtime()
        self.visible: set[str] = set()
        await self._look()

    async def _look(self) -> None:
        """(Re)read which topics this viewer may see; send the status of newly visible ones."""
        visible = set(await self.runtime.visible_topics(self.user, self.only))
        for slug in self.visible - visible:
            self.runtime.hub.unwatch(slug, self)
        new, self.visible = visible - self.visible, visible
        for slug in new:
            self.runtime.hub.watch(slug, self)  # rights on it may change
        now = self.runtime.loop.time()
        current, unread = self.runtime.board.recent(new, now, settings.STATUS_REFRESH_S)
        if unread:
            read = await database_sync_to_async(statuses)(unread)
            for status in read:
                self.runtime.board.update(status, now)  # viewers shown an older one hear of it
            current.extend(read)
        for status in sorted(current, key=lambda s: s.slug):
            self.show(status)
        self.runtime.board.watch(self, self.visible)

    def recheck_rights(self) -> None:
        self.spawn(self._look())

    async def on_disconnect(self) -> None:
        if hasattr(self, "runtime"):
            self.runtime.board.unwatch(self)
            for slug in self.visible:
                self.runtime.hub.unwatch(slug, self)

    async def on_frame(self, raw: dict[str, Any]) -> None:
        self.refuse("status sockets only send; nothing is read from them", raw)

    def show(self, status: TopicStatus) -> None:
        self.push_model(StatusFrame.of(status))
