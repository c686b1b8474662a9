"""Every scenario of the matrix, in the order the table lists them."""

from __future__ import annotations

from faults import broker_rows, disk_rows, outbox_rows, work_rows
from faults.scenario import Scenario

SCENARIOS: tuple[Scenario, ...] = (
    *broker_rows.SCENARIOS,
    *outbox_rows.SCENARIOS,
    *work_rows.SCENARIOS,
    *disk_rows.SCENARIOS,
)
