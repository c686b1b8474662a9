"""What a server process costs, read from /proc: resident memory and CPU time.

Read from outside the process, so the same numbers come from the raw relay and from Switchyard.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import dataclass

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live descendants (django-cqrs's ``cqrs_consume`` works in
    child processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(entry))
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_s(current)
        except (OSError, IndexError, ValueError):
            continue
        pending.extend(children.get(current, []))
    return total


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU used by the servers and by this load generator over a measured window, as the fraction
    of one core: a server near 1.0 is the bottleneck; a load generator near 1.0 limits the run."""

    pids: list[int]
    _wall: float = 0.0
    _servers: float = 0.0
    _own: float = 0.0

    def start(self) -> None:
        self._wall, self._servers, self._own = time.perf_counter(), self._server_total(), own_cpu_s()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        if wall <= 0:
            return {"server_cpu": 0.0, "loadgen_cpu": 0.0}
        return {
            "server_cpu": round((self._server_total() - self._servers) / wall, 2),
            "loadgen_cpu": round((own_cpu_s() - self._own) / wall, 2),
        }

    def _server_total(self) -> float:
        return sum(cpu_s(pid) for pid in self.pids)


async def wait_until_idle(pid: int, deadline: float, busy_fraction: float = 0.15, step_s: float = 0.1) -> float:
    """Wait until ``pid`` uses under ``busy_fraction`` of a core over one step (or the deadline
    passes: ``time.monotonic()`` based); returns when it went idle, i.e. the start of the first
    quiet step. A server keeps working after a handshake completes (Switchyard attaches the
    consumer after accepting it). CPU time comes in 10 ms ticks: one tick per 100 ms step is
    still idle (housekeeping loops), two are not."""
    last_cpu, last = cpu_s(pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(step_s)
        cpu, now = cpu_s(pid), time.monotonic()
        if (cpu - last_cpu) / (now - last) < busy_fraction:
            return last
        last_cpu, last = cpu, now
    return time.monotonic()
