"""Topic view lookups of connections attaching together share one read (app/broker/runtime.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from app.broker import runtime as runtime_module
from app.broker.runtime import BrokerRuntime
from app.broker.topics import TopicView
from tests.protocol import make_topic

TIMEOUT_S = 10.0


class HeldReads:
    """view_topic, counted, each read held until ``release``."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.go = threading.Event()
        self.real = runtime_module.view_topic

    def __call__(self, slug: str, user: Any) -> TopicView | None:
        self.calls += 1
        self.started.set()
        self.go.wait(TIMEOUT_S)
        return self.real(slug, user)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldReads]:
    reads = HeldReads()
    monkeypatch.setattr(runtime_module, "view_topic", reads)
    yield reads
    reads.go.set()


@pytest.fixture
async def runtime() -> AsyncIterator[BrokerRuntime]:
    broker = BrokerRuntime()
    yield broker
    await broker.stop()


async def started(reads: HeldReads) -> None:
    assert await asyncio.to_thread(reads.started.wait, TIMEOUT_S), "no read began"


async def test_lookups_of_one_principal_arriving_together_share_a_read(held: HeldReads, runtime: BrokerRuntime):
    """Thirty connections of one principal looking up one topic together cause one read, and all get the view."""
    slug = await asyncio.to_thread(make_topic)
    lookups = [asyncio.ensure_future(runtime.topic_view(slug, AnonymousUser(), "anonymous")) for _ in range(30)]
    await started(held)
    held.go.set()
    async with asyncio.timeout(TIMEOUT_S):
        views = await asyncio.gather(*lookups)
    assert held.calls == 1 and {view.slug for view in views if view is not None} == {slug} and None not in views


async def test_a_lookup_after_a_rights_change_does_not_join_an_older_read(held: HeldReads, runtime: BrokerRuntime):
    """A lookup made after rights changed reads again instead of taking the answer of a read begun before."""
    slug = await asyncio.to_thread(make_topic)
    before = asyncio.ensure_future(runtime.topic_view(slug, AnonymousUser(), "anonymous"))
    await started(held)
    runtime.remote_rights_changed(slug)
    after = asyncio.ensure_future(runtime.topic_view(slug, AnonymousUser(), "anonymous"))
    held.go.set()
    async with asyncio.timeout(TIMEOUT_S):
        await asyncio.gather(before, after)
    assert held.calls == 2


async def test_other_principals_read_for_themselves(held: HeldReads, runtime: BrokerRuntime):
    """Lookups of two principals are two reads: rights are per principal."""
    slug = await asyncio.to_thread(make_topic)
    first = asyncio.ensure_future(runtime.topic_view(slug, AnonymousUser(), "anonymous"))
    await started(held)
    second = asyncio.ensure_future(runtime.topic_view(slug, AnonymousUser(), "user:other"))
    held.go.set()
    async with asyncio.timeout(TIMEOUT_S):
        await asyncio.gather(first, second)
    assert held.calls == 2


async def test_stop_ends_a_read_in_progress(held: HeldReads):
    """Stopping the runtime cancels a shared read still running; its waiter is cancelled, no task is left."""
    runtime = BrokerRuntime()
    slug = await asyncio.to_thread(make_topic)
    lookup = asyncio.ensure_future(runtime.topic_view(slug, AnonymousUser(), "anonymous"))
    await started(held)
    async with asyncio.timeout(TIMEOUT_S):
        stopping = asyncio.ensure_future(runtime.stop())
        await asyncio.sleep(0)
        held.go.set()
        await stopping
        result = await asyncio.gather(lookup, return_exceptions=True)
    assert isinstance(result[0], asyncio.CancelledError)
    assert not runtime._view_reads
