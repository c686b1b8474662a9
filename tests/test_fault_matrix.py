"""The fault matrix's quick profile (``make faults`` runs the full one): every scenario against real
processes loses nothing acked, logs nothing it did not expect, and exercises what it claims to.

Scenarios that stop one of the machine's services (PostgreSQL, Redis, RabbitMQ) run alone
(restarts_services); the services are brought back whatever happens.
"""

from __future__ import annotations

import functools

import pytest

from faults.broker_rows import consumer_crash
from faults.matrix import SCENARIOS
from faults.row import table
from faults.scenario import Scenario, play
from faults.services import services_up

pytestmark = pytest.mark.pinned_backend


def _marks(scenario: Scenario) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.server_errors(*scenario.expected_errors)]
    if scenario.restarts_services:
        marks.append(pytest.mark.restarts_services)
    return marks


@pytest.mark.parametrize(
    "scenario", [pytest.param(s, id=s.key.replace(" ", "-"), marks=_marks(s)) for s in SCENARIOS]
)
async def test_fault_loses_nothing(scenario: Scenario) -> None:
    """The scenario's row: zero loss, a clean log, and traffic that went through the fault."""
    try:
        row = await play(scenario, quick=True)
    finally:
        services_up()
    if row.skipped is not None:
        pytest.skip(row.skipped)
    print(table([row]))
    assert row.passed, table([row])


async def test_a_loss_shows_in_the_row() -> None:
    """A consumer crash on a topic that stores nothing loses what the crashed consumer took: the row counts it."""
    lossy = Scenario("consumer crash before ack", "sqlite",
                     functools.partial(consumer_crash, policy="disabled", delivery_timeout_s=3.0))
    row = await play(lossy, quick=True)
    assert row.messages is not None and row.messages.lost > 0 and not row.passed, table([row])
