"""The per-process broker state: the hub of local connections and the group-commit writer."""

from __future__ import annotations

import asyncio

from django.conf import settings

from app.availability.board import StatusBoard
from app.broker.commit import GroupCommitWriter
from app.broker.hub import Delivered, Hub


class BrokerRuntime:
    def __init__(self) -> None:
        self.hub = Hub()
        self.board = StatusBoard()
        self.writer = GroupCommitWriter(max_rows=settings.WRITE_BATCH_ROWS)
        # Response topics this process already made sure of: slug -> (topic id, source topic id).
        self.response_topics: dict[str, tuple[int, int]] = {}
        self.unacked_limit = settings.UNACKED_PER_CONNECTION
        self.loop = asyncio.get_running_loop()

    def deliver(self, slug: str, item: Delivered) -> int:
        """Hand a message to the consumers of ``slug``; the number of connections reached."""
        return self.hub.publish(slug, item)

    async def stop(self) -> None:
        await self.writer.stop()


_runtime: BrokerRuntime | None = None


def get_runtime() -> BrokerRuntime:
    """The runtime of the running event loop (a new loop, as in tests, gets a new one)."""
    global _runtime
    if _runtime is None or _runtime.loop is not asyncio.get_running_loop():
        _runtime = BrokerRuntime()
    return _runtime


async def stop_runtime() -> None:
    global _runtime
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        await runtime.stop()
