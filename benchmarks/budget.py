"""Keeps a whole run inside its time budget when the machine is slow or shared.

Greedy: a workload gets its nominal deadline unless that would leave the workloads after it less
than a minimum each. On a quiet machine nothing is shortened (most workloads end by count long
before their deadline); on a busy one the last workloads run shorter instead of overrunning, and
report "stopped at deadline" with what they did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

MIN_DEADLINE_S = 3.0
# Estimates of what is spent besides the deadlines: a fresh database, migrations and server start
# per configuration; load generator start, drain and settle waits per workload.
CONFIG_OVERHEAD_S = 5.0
RUN_OVERHEAD_S = 2.5


@dataclass
class TimeBudget:
    total_s: float  # 0: no budget, nominal deadlines only
    runs_left: int
    configs_left: int
    started: float = field(default_factory=time.monotonic)

    def start_config(self) -> None:
        self.configs_left -= 1

    def deadline(self, nominal_s: float) -> float:
        """The deadline of the next workload; call ``ran()`` after it."""
        if self.total_s <= 0:
            return nominal_s
        left = self.total_s - (time.monotonic() - self.started)
        reserved = (self.configs_left * CONFIG_OVERHEAD_S + RUN_OVERHEAD_S
                    + (self.runs_left - 1) * (MIN_DEADLINE_S + RUN_OVERHEAD_S))
        return round(max(MIN_DEADLINE_S, min(nominal_s, left - reserved)), 1)

    def ran(self) -> None:
        self.runs_left -= 1
