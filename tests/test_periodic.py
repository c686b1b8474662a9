"""The relays' periodic loop."""

import asyncio
import contextlib
import logging

import pytest

from relays.periodic import MAX_BACKOFF_S, backoff_s, every
from tests.full_disk import fill_up


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
        loop = asyncio.create_task(every(0.001, step, "filling"))
        await asyncio.wait_for(third.wait(), 10)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert {(r.levelname, r.exc_info) for r in caplog.records} == {("WARNING", None)}
    assert "filling failed (1 in a row), the database's disk is full" in caplog.records[0].getMessage()
