"""The deadline of a subscription's lease as the serving dispatcher keeps it (docs/architecture.md
18.3): when its last successful ``acquire`` *started*, plus the lease, less a margin for clock skew
(app/leases/terms.py), on the event loop's clock. A timer set at the deadline tells the dispatcher
when renewals kept failing, so it stands by with nothing to send; sends ask ``may_act`` themselves
(after a pause the loop handles sockets before timers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from django.conf import settings

from app.leases.terms import lease_deadline, may_act


class LeaseClock:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_lapse: Callable[[], None]) -> None:
        self.loop = loop
        self.on_lapse = on_lapse
        self.deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def renewed(self, started: float) -> None:
        """Taken or renewed by a call that started at ``started`` (loop time)."""
        self.deadline = lease_deadline(started, settings.SUBSCRIPTION_LEASE_S)
        self.cancel()
        self._timer = self.loop.call_at(self.deadline, self._passed)

    def cancel(self) -> None:
        """No timer any more (standing by, or stopped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _passed(self) -> None:
        # No renewal since (it would have replaced this timer); the loop may run it a clock tick early.
        self._timer = None
        self.on_lapse()

    def may_act(self, now: float) -> bool:
        return may_act(now, self.deadline)
