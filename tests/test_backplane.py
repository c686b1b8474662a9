"""The backplane's loops while Redis is away (app/broker/backplane.py), over a fake channel layer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.exceptions

from app.broker.backplane import LayerBackplane, Receiver

pytestmark = pytest.mark.database_agnostic

TIMEOUT_S = 10.0


class AwayLayer:
    """A channel layer on a Redis that refuses its first ``away`` sends and receives, then works."""

    def __init__(self, away: int) -> None:
        self.sends_refused = self.receives_refused = away
        self.published: list[dict[str, Any]] = []
        self.sent = asyncio.Event()
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def new_channel(self, prefix: str) -> str:
        return prefix + "test"

    async def group_add(self, group: str, channel: str) -> None:
        return None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if self.sends_refused:
            self.sends_refused -= 1
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.published.append(message)
        self.sent.set()

    async def receive(self, channel: str) -> dict[str, Any]:
        if self.receives_refused:
            self.receives_refused -= 1
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return await self.incoming.get()


class WorkNotices(Receiver):
    def __init__(self) -> None:
        self.runnable = asyncio.Event()

    def remote_work_runnable(self) -> None:
        self.runnable.set()


def messages(caplog: pytest.LogCaptureFixture, name: str) -> list[tuple[str, str, bool]]:
    return [(r.levelname, r.getMessage().split(" after ")[0].split(" (")[0], r.exc_info is not None)
            for r in caplog.records if r.getMessage().startswith(name)]


async def test_redis_away_for_sends_is_a_line_as_it_starts_and_as_it_ends(caplog: pytest.LogCaptureFixture):
    """Sends failing while Redis is away log one WARNING as it starts and one as it ends, no traceback."""
    layer = AwayLayer(away=2)
    backplane = LayerBackplane(layer)
    with caplog.at_level(logging.WARNING, logger="app.broker.backplane"):
        await backplane.start(WorkNotices())
        try:
            backplane.work_runnable()
            await asyncio.wait_for(layer.sent.wait(), TIMEOUT_S)
        finally:
            await backplane.stop()
    assert messages(caplog, "backplane send") == [
        ("WARNING", "backplane send failed, Redis is unreachable", False),
        ("WARNING", "backplane send: Redis is reachable again", False)]
    assert [m["type"] for m in layer.published] == ["work.runnable"]


async def test_redis_away_for_receives_is_a_line_as_it_starts_and_as_it_ends(caplog: pytest.LogCaptureFixture):
    """Receives failing while Redis is away log one WARNING as it starts and one as it ends, no traceback."""
    layer = AwayLayer(away=2)
    backplane = LayerBackplane(layer)
    notices = WorkNotices()
    layer.incoming.put_nowait({"type": "work.runnable", "origin": "another process"})
    with caplog.at_level(logging.WARNING, logger="app.broker.backplane"):
        await backplane.start(notices)
        try:
            await asyncio.wait_for(notices.runnable.wait(), TIMEOUT_S)
        finally:
            await backplane.stop()
    assert messages(caplog, "backplane receive") == [
        ("WARNING", "backplane receive failed, Redis is unreachable", False),
        ("WARNING", "backplane receive: Redis is reachable again", False)]
