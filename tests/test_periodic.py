"""The relays' periodic loop."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg
import pytest
from django.db import OperationalError

from relays.periodic import MAX_BACKOFF_S, backoff_s, every
from tests.full_disk import fill_up


async def run_until(step: Callable[[], Awaitable[None]], name: str, done: asyncio.Event) -> None:
    """Run ``every`` on ``step`` (a millisecond apart) until ``done`` is set, then cancel it."""
    loop = asyncio.create_task(every(0.001, step, name))
    await asyncio.wait_for(done.wait(), 10)
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop


def test_backoff_grows_and_is_capped():
    """Back-off doubles per failure, never exceeds the cap, and is jittered below it."""
    assert 0.5 <= backoff_s(1.0, 1) <= 2.0
    assert backoff_s(1.0, 20) <= MAX_BACKOFF_S


async def test_full_disk_is_a_warning_line(caplog: pytest.LogCaptureFixture):
    """A step failing on a full disk is logged as one WARNING without a traceback, and the loop goes on."""
    steps = 0
    third = asyncio.Event()

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps >= 3:
            third.set()
        fill_up()

    with caplog.at_level(logging.WARNING, logger="relays.periodic"):
        await run_until(step, "filling", third)
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "filling failed, the database's disk is full" in caplog.records[0].getMessage()


async def test_unreachable_database_is_a_line_as_it_starts_and_as_it_ends(caplog: pytest.LogCaptureFixture):
    """Steps failing while the database is unreachable log one WARNING as it starts and one as it ends, no traceback."""
    steps = 0
    recovered = asyncio.Event()

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps <= 3:
            raise OperationalError("server closed the connection unexpectedly") from psycopg.OperationalError(
                "server closed the connection unexpectedly")
        recovered.set()

    with caplog.at_level(logging.WARNING, logger="relays.periodic"):
        await run_until(step, "resync", recovered)
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None), ("WARNING", None)]
    assert "resync failed, the database is unreachable" in caplog.records[0].getMessage()
    assert "resync: the database is reachable again after 3 failures over" in caplog.records[1].getMessage()


async def test_unknown_failure_is_an_error_each_time(caplog: pytest.LogCaptureFixture):
    """A step failing with no known outage is an ERROR with its traceback every time: a defect."""
    steps = 0
    second = asyncio.Event()

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps >= 2:
            second.set()
        raise KeyError("a bug")

    with caplog.at_level(logging.WARNING, logger="relays.periodic"):
        await run_until(step, "broken", second)
    # Each failure (a third may come before the cancellation).
    assert {(r.levelname, r.exc_info is not None) for r in caplog.records} == {("ERROR", True)}
    assert [r.getMessage() for r in caplog.records[:2]] == ["broken failed (1 in a row)", "broken failed (2 in a row)"]
