"""``/ws/status/[?topics=a,b]``: the status of the topics the user may see, then every change."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from app.availability.services import TopicStatus, statuses, visible_topics
from app.broker.runtime import get_runtime
from consumers.base import FrameConsumer
from consumers.frames import StatusFrame


class StatusViewerConsumer(FrameConsumer):
    async def on_connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        only = {s for s in query.get("topics", [""])[0].split(",") if s} or None
        self.visible = set(await database_sync_to_async(visible_topics)(self.user, only))
        self.runtime = get_runtime()
        current = await database_sync_to_async(statuses)(self.visible)
        for status in current:
            self.show(status)
        self.runtime.board.watch(self, current)

    async def on_disconnect(self) -> None:
        if hasattr(self, "runtime"):
            self.runtime.board.unwatch(self)

    async def on_frame(self, raw: dict[str, Any]) -> None:
        self.refuse("status sockets only send; nothing is read from them", raw)


    def wants(self, slug: str) -> bool:
        return slug in self.visible

    def show(self, status: TopicStatus) -> None:
        self.push_model(StatusFrame.of(status))
