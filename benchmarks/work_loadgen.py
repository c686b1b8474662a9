"""The work benchmark's load generator: worker sockets and an HTTP submitter against one server.

    python -m benchmarks.work_loadgen CONFIG_JSON     # prints the results as one JSON line

A process of its own (benchmarks/work.py starts it), so it gets a core and an event loop to itself.
Its workers are plain ``websockets`` clients speaking the ``/ws/workers/`` protocol as
tests/work_worker.py does: ``metadata`` when asked, and for each ``work_request_available`` a
``started`` and a ``completed`` (success) at once: the ``noop`` task does nothing. Requests are
submitted over HTTP with the submitter's token, ``POST /api/v1/work-requests[/bulk]``, the path that
commits and then pushes to the idle workers. The database is read directly (autocommit, a fresh
snapshot per read) to see when completions committed: a worker is told nothing when it completes.
Those clients (the worker sockets, the HTTP submitter, the database reads) are benchmarks/work_clients.py.

For each number of workers, with all of them connected:

- ``backlog``: the workers have not sent their metadata yet (no work is offered before it), N requests
  are submitted and the server left to go idle; then every worker sends its metadata at once.
  Dispatch alone: assigned/s and completed/s from that moment;
- ``push``: the workers are idle (metadata sent); N requests are submitted in bulks of
  WORK_REQUESTS_BULK_MAX (100), one bulk after the other. From the first submission: submitted/s,
  assigned/s (the last ``work_request_available``), completed/s (the read that saw all N completed);
- ``latency``: the workers are idle; one request at a time, each once the previous one completed.
  Submit-to-start: from sending the POST to a worker receiving ``work_request_available`` (the push
  may arrive before the HTTP answer does), and the POST's own round trip.

Each phase starts once the server went idle (at most SETTLE_S), and ends at its count or its deadline:
``deadline_s``, or less when the run's ``budget_s`` would not leave the phases after it as much (the
backlog's submissions count against its phase's deadline).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from benchmarks.procstat import CpuMeter, wait_until_idle
from benchmarks.stats import latency_summary_ms, rate
from benchmarks.work_clients import POLL_S, Database, Fleet, Http

BULK = 100  # WORK_REQUESTS_BULK_MAX's default: the most one bulk POST may hold
# The latency phase waits for each request's completion before the next: read every 2 ms (on
# PostgreSQL each read is a query its server answers: at most 5 % of a core).
CYCLE_POLL_S = 0.002
STALL_S = 5.0
MIN_DEADLINE_S = 3.0
# Besides its deadline a phase spends the settle wait, and connecting or closing its workers.
PHASE_OVERHEAD_S = 1.5
SETTLE_S = 5.0
NOOP = {"task_name": "noop", "task_data": {}}


@dataclass
class Config:
    ws: str  # the worker socket URL
    http: str  # http://host:port
    keys: list[str]  # one per worker
    submitter: str
    database_url: str
    table: str  # where the requests are: work_workrequest, or the baseline's bench_raw_job
    workers: list[int]
    requests: int
    latency_requests: int
    deadline_s: float  # per phase
    budget_s: float  # the whole run, warm-up included (0: none)
    server_pid: int
    phases: list[str] = field(default_factory=lambda: ["backlog", "push", "latency"])


class Pace:
    """Each phase's deadline: its nominal one, or an equal share of what is left of the run's budget."""

    def __init__(self, config: Config) -> None:
        self.nominal_s = config.deadline_s
        self.end = time.perf_counter() + config.budget_s if config.budget_s > 0 else None
        self.left = len(config.phases) * len(config.workers)

    def deadline(self) -> float:
        """The next phase's deadline (a ``time.perf_counter()`` instant) from now."""
        now = time.perf_counter()
        left = max(self.left, 1)
        share = self.nominal_s if self.end is None else (self.end - now) / left - PHASE_OVERHEAD_S
        self.left -= 1
        return now + max(MIN_DEADLINE_S, min(self.nominal_s, share))


async def until(check: Any, deadline: float, poll_s: float = POLL_S) -> bool:
    while not check():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


async def submit_all(http: Http, count: int, deadline: float | None = None) -> tuple[int, list[int]]:
    """``count`` noop requests in bulks (no more bulks past ``deadline``): how many were created, and the
    HTTP statuses that were not 201."""
    created, failed = 0, []
    for start in range(0, count, BULK):
        if deadline is not None and time.perf_counter() > deadline:
            break
        size = min(BULK, count - start)
        status, _ = await http.post("/api/v1/work-requests/bulk", [NOOP] * size)
        if status == 201:
            created += size
        else:
            failed.append(status)
    return created, failed


async def settle(config: Config) -> None:
    await wait_until_idle(config.server_pid, time.monotonic() + SETTLE_S)


async def tidy(db: Database) -> int:
    """After a phase: withdraw what it left pending and let what is running complete; how many were withdrawn."""
    withdrawn = db.withdraw_pending()
    await until(lambda: db.running() == 0, time.perf_counter() + SETTLE_S)
    return withdrawn


async def dispatch(config: Config, fleet: Fleet, http: Http, db: Database, pace: Pace,
                   backlog: bool) -> dict[str, Any]:
    """N requests to the connected workers: already queued (``backlog``), or submitted now (push)."""
    count = config.requests
    failed: list[int] = []
    if backlog:
        deadline = pace.deadline()
        # Half the phase at most: the dispatch it is there for needs the rest.
        count, failed = await submit_all(http, count, time.perf_counter() + (deadline - time.perf_counter()) / 2)
        await settle(config)
    else:
        await settle(config)
        deadline = pace.deadline()
    done_before = db.completed()
    fleet.times = []
    meter = CpuMeter([config.server_pid])
    meter.start()
    started = time.perf_counter()
    if backlog:
        await fleet.report_metadata()
        submitted = started
    else:
        count, failed = await submit_all(http, count, deadline)
        submitted = time.perf_counter()
    all_assigned = await until(lambda: len(fleet.times) >= count, deadline)
    assigned_at = max(fleet.times, default=started)
    all_done = await until(lambda: db.completed() - done_before >= count, deadline)
    completed_at = time.perf_counter()
    cpu = meter.stop()
    assigned, completed = len(fleet.times), db.completed() - done_before
    return {
        "requests": count, "assigned": assigned, "completed": completed, "complete": all_assigned and all_done,
        "withdrawn": await tidy(db),
        # Out of time with requests left and none assigned for STALL_S since the last was assigned or
        # submitted: work that was never pushed.
        "stalled": not all_assigned and completed_at - max(assigned_at, submitted) >= STALL_S,
        "submit_failures": failed,
        "submitted_per_s": None if backlog else rate(count, submitted - started),
        "assigned_per_s": rate(assigned, assigned_at - started),
        "completed_per_s": rate(completed, completed_at - started),
        "seconds": round(completed_at - started, 3), **cpu,
    }


async def latency(config: Config, fleet: Fleet, http: Http, db: Database, pace: Pace) -> dict[str, Any]:
    """One request at a time, each once the previous completed: submit-to-start, the POST's round
    trip, and the cycle (submit to its completion committed, as read from the database)."""
    await settle(config)
    deadline = pace.deadline()
    starts: list[float] = []
    answers: list[float] = []
    cycles: list[float] = []
    failed: list[int] = []
    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    for _ in range(config.latency_requests):
        fleet.waiting = loop.create_future()
        sent = time.perf_counter()
        status, _ = await http.post("/api/v1/work-requests", NOOP)
        answered = time.perf_counter()
        if status != 201:
            failed.append(status)
            continue
        try:
            at, request_id = await asyncio.wait_for(fleet.waiting, max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            break
        starts.append(at - sent)
        answers.append(answered - sent)
        if not await until(lambda rid=request_id: db.status(rid) == "completed", deadline, CYCLE_POLL_S):
            break
        cycles.append(time.perf_counter() - sent)
    fleet.waiting = None
    elapsed = time.perf_counter() - began
    return {"requests": config.latency_requests, "measured": len(starts), "completed": len(cycles),
            "complete": len(cycles) == config.latency_requests, "withdrawn": await tidy(db),
            "submit_failures": failed, "requests_per_s": rate(len(cycles), elapsed),
            "start_ms": latency_summary_ms(starts), "post_rtt_ms": latency_summary_ms(answers),
            "cycle_ms": latency_summary_ms(cycles)}


async def warm_up(config: Config, http: Http, db: Database) -> None:
    """A few requests through every path first: the server's first request of each kind is slow."""
    fleet = Fleet(config.ws)
    await fleet.connect(config.keys[:1])
    await fleet.report_metadata()
    before = db.completed()
    for _ in range(5):
        await http.post("/api/v1/work-requests", NOOP)
    await submit_all(http, 20)
    await until(lambda: db.completed() - before >= 25, time.perf_counter() + 30)
    await fleet.close()


async def run(config: Config) -> dict[str, Any]:
    http = Http(config.http, config.submitter)
    db = Database(config.database_url, config.table)
    results: dict[str, Any] = {}
    try:
        pace = Pace(config)
        await warm_up(config, http, db)
        for count in config.workers:
            fleet = Fleet(config.ws)
            await fleet.connect(config.keys[:count])
            row: dict[str, Any] = {}
            if "backlog" in config.phases:
                row["backlog"] = await dispatch(config, fleet, http, db, pace, backlog=True)
            else:
                await fleet.report_metadata()
            if "push" in config.phases:
                row["push"] = await dispatch(config, fleet, http, db, pace, backlog=False)
            if "latency" in config.phases:
                row["latency"] = await latency(config, fleet, http, db, pace)
            row["error_frames"] = len(fleet.errors)
            if fleet.errors:
                row["first_error_frame"] = fleet.errors[0]
            await fleet.close()
            results[str(count)] = row
            print(f"  {count} workers done", file=sys.stderr, flush=True)
    finally:
        await http.close()
        db.close()
    return results


def main() -> None:
    config = Config(**orjson.loads(sys.argv[1]))
    import uvloop

    results = uvloop.run(run(config))
    sys.stdout.write(orjson.dumps(results).decode() + "\n")


if __name__ == "__main__":
    main()
