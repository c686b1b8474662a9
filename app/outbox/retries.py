"""What happens to an event after a failed publish: plain rules, no I/O."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from app.outbox.models import Status


def backoff_s(attempts: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before attempt ``attempts + 1``: base * 2**(attempts - 1), capped at ``max_s``, then
    jittered down to half of that so relays retrying after one outage do not stampede together."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return float(ceiling * (0.5 + 0.5 * rand()))


def after_failure(
    attempts: int, now: datetime, *, max_attempts: int, base_s: float, max_s: float,
    rand: Callable[[], float] = random.random,
) -> tuple[Status, datetime]:
    """The status and next attempt time of an event whose ``attempts``-th publish just failed."""
    if attempts >= max_attempts:
        return Status.FAILED, now
    return Status.RETRY, now + timedelta(seconds=backoff_s(attempts, base_s, max_s, rand))
