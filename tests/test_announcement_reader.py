"""The announcement reader of a runtime in this process, on the session database, with its reads held
at a chosen point (what a loaded machine does by chance to a server that has just started)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import pytest
from django.contrib.auth.models import AnonymousUser

from app.broker import announcements
from app.broker.announcements import Change
from app.broker.runtime import BrokerRuntime
from relays.announcements import announcement_loop
from tests.protocol import TIMEOUT_S, make_topic


@pytest.fixture
async def first_read_held(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BrokerRuntime]:
    """A runtime whose announcement loop has loaded the topic directory and is held in its first read
    of the feed (in its database thread) until the test ends."""
    reading, go = threading.Event(), threading.Event()
    read = announcements.read

    def held(after: int, holes: list[int]) -> list[Change]:
        reading.set()
        go.wait(TIMEOUT_S)
        return read(after, holes)

    monkeypatch.setattr(announcements, "read", held)
    runtime = BrokerRuntime()
    loop = asyncio.create_task(announcement_loop(runtime))
    try:
        assert await asyncio.to_thread(reading.wait, TIMEOUT_S), "the first read of the feed never began"
        assert runtime.directory.ready
        yield runtime
    finally:
        go.set()
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await runtime.stop()


async def test_topic_created_during_the_first_feed_read_is_found(first_read_held: BrokerRuntime) -> None:
    """A topic created elsewhere after the directory was loaded, before the feed's first read was
    applied, is found (it was refused as "does not exist" on a server just started)."""
    slug = make_topic()
    view = await asyncio.wait_for(first_read_held.topic_view(slug, AnonymousUser(), "anonymous"), TIMEOUT_S)
    assert view is not None and view.slug == slug
