"""A fault scenario: what it needs, how big it runs, and running it with its servers' logs judged."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from faults.row import Row
from tests.server_log import settle, unexpected
from tests.servers import WATCHED


@dataclass(frozen=True)
class Profile:
    """How big a run is: ``quick`` is CI's (tests/test_fault_matrix.py), the full one ``make faults``'."""

    quick: bool
    workdir: Path

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True)
class Scenario:
    """``run`` makes the fault and returns the row; ``expected_errors`` are the ERROR records the
    fault makes the servers log (``re.search`` over a record), anything else is counted as unexpected.
    ``restarts_services``: it stops a service of the machine's (PostgreSQL, Redis, RabbitMQ), so it
    runs alone in CI."""

    name: str
    backend: str
    run: Callable[[Profile], Awaitable[Row]]
    expected_errors: tuple[str, ...] = ()
    restarts_services: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}[{self.backend}]"


async def play(scenario: Scenario, quick: bool) -> Row:
    """Run ``scenario`` in a working directory of its own; its row, with what every server process it
    started (or that was running) logged during it judged against ``expected_errors``."""
    before = {id(proc): len(proc.output) for proc in WATCHED}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"switchyard-fault-{scenario.name}-") as workdir:
        try:
            row = await scenario.run(Profile(quick=quick, workdir=Path(workdir)))
        except pytest.skip.Exception as skip:  # tests.services.require_*: a service is absent (not under CI)
            return Row(scenario.name, scenario.backend, skipped=skip.msg)
    row.scenario, row.backend = scenario.name, scenario.backend
    patterns = [re.compile(p) for p in scenario.expected_errors]
    procs = list(WATCHED)
    settle(procs)
    for proc in procs:
        for record in unexpected(proc.output, before.get(id(proc), 0), len(proc.output), patterns):
            row.unexpected_errors.append(record.lines[0].rstrip())
    row.notes.append(f"ran {time.monotonic() - started:.1f} s")
    return row
