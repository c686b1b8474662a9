"""The loop every relay runs: a step every interval; failures are logged and backed off, with
jitter, and cancellation always goes through. An outage (the database unreachable, its disk full)
is logged as it starts and as it ends, not once per failed step (app/outages.py)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from app.outages import OutageLog

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def backoff_s(interval_s: float, failures: int) -> float:
    """How long to wait after ``failures`` failures in a row (exponential, capped, jittered)."""
    return float(min(MAX_BACKOFF_S, interval_s * 2**failures) * random.uniform(0.5, 1.0))


async def every(interval_s: float, step: Callable[[], Awaitable[None]], name: str, *, first_wait: bool = False) -> None:
    """Run ``step`` every ``interval_s`` seconds until cancelled; never returns."""
    outages = OutageLog(logger, name)
    if first_wait:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await step()
            outages.succeeded()
            await asyncio.sleep(interval_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outages.failed(exc)
            await asyncio.sleep(backoff_s(interval_s, outages.failures))
