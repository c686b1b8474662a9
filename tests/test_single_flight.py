"""Single-flight checks (app/server/single_flight.py) and /readyz's use of them, in plain asyncio."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from app.server import readiness
from app.server.single_flight import SingleFlight

pytestmark = pytest.mark.database_agnostic


class Gated:
    """A check that counts its runs and ends (or raises) only when released."""

    def __init__(self, error: Exception | None = None) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.error = error

    async def __call__(self) -> None:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error


async def test_callers_during_a_run_share_it() -> None:
    """A caller arriving while a run is in flight waits for that run; no second run starts."""
    gated = Gated()
    flight = SingleFlight(gated)
    first = asyncio.ensure_future(flight())
    await gated.started.wait()
    second = asyncio.ensure_future(flight())
    gated.release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert gated.runs == 1


async def test_a_run_starts_again_once_the_last_ended() -> None:
    """After a run ended, the next call starts a new one (outcomes are not cached)."""
    gated = Gated()
    gated.release.set()
    flight = SingleFlight(gated)
    await asyncio.wait_for(flight(), 5)
    await asyncio.wait_for(flight(), 5)
    assert gated.runs == 2


async def test_waiters_share_the_runs_exception() -> None:
    """A run that fails fails every caller waiting for it."""
    gated = Gated(ConnectionError("down"))
    flight = SingleFlight(gated)
    first = asyncio.ensure_future(flight())
    await gated.started.wait()
    second = asyncio.ensure_future(flight())
    gated.release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError, ConnectionError] and gated.runs == 1


async def test_a_caller_giving_up_leaves_the_run_to_the_others() -> None:
    """Cancelling one waiter does not cancel the run: a later caller joins it and gets its end."""
    gated = Gated()
    flight = SingleFlight(gated)
    first = asyncio.ensure_future(flight())
    await gated.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert flight.in_flight()
    second = asyncio.ensure_future(flight())
    gated.release.set()
    await asyncio.wait_for(second, 5)
    assert gated.runs == 1


async def test_a_probe_during_a_hung_check_reports_it_still_running() -> None:
    """/readyz's outcome: the probe that started a hung check times out, the next one joins it and says
    it is still running, with no second run; once it ended, a probe runs the check again."""
    gated = Gated()
    flight = SingleFlight(gated)
    with override_settings(READINESS_TIMEOUT_S=0.05):
        assert (await readiness._outcome(flight)).startswith("unreachable: no answer within")
        assert (await readiness._outcome(flight)).startswith("unreachable: check still running")
        assert gated.runs == 1
        gated.release.set()
        assert flight.flight is not None
        await asyncio.wait_for(flight.flight, 5)
        assert await readiness._outcome(flight) == "ok" and gated.runs == 2
