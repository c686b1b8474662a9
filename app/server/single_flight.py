"""At most one run of an awaitable check at a time per process; callers meanwhile share that run.

A check whose work holds a thread (the database query of ``/readyz`` runs on one) cannot be called
off: a caller that stops waiting leaves the thread where it is. Were each caller to start its own
run, a hung dependency would gain one stuck thread per call until the shared pool is full. Here a
caller arriving while a run is in flight waits for that same run (``asyncio.shield``: giving up
waiting does not cancel it for the others), and a new run starts only after it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class SingleFlight:
    def __init__(self, run: Callable[[], Awaitable[None]]) -> None:
        self.run = run
        self.flight: asyncio.Future[None] | None = None

    def in_flight(self) -> bool:
        """Whether a run is under way in this event loop."""
        flight = self.flight
        return flight is not None and not flight.done() and flight.get_loop() is asyncio.get_running_loop()

    async def __call__(self) -> None:
        """Await the run in flight, or start one. Its exception is every waiter's."""
        if not self.in_flight():
            self.flight = asyncio.ensure_future(self.run())
            # Retrieved here, so a run every waiter gave up on is not logged as an unretrieved error.
            self.flight.add_done_callback(lambda done: done.cancelled() or done.exception())
        assert self.flight is not None
        await asyncio.shield(self.flight)
