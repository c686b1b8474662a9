"""Work request benchmark: Switchyard's worker push path against a raw job queue, same run, same database.

    python -m benchmarks.work [--quick] [--databases sqlite,postgres] [--workers 1,10,50]

For each database (a fresh SQLite file; a fresh PostgreSQL database on 127.0.0.1:5432 when it answers)
and each system, a server process and a load generator process (benchmarks/work_loadgen.py: real
worker sockets and an HTTP submitter) run with 1, 10 and 50 connected workers:

- backlog: N noop requests queued, then every worker says it is ready: dispatch alone;
- push: N requests submitted in bulks of 100 to idle workers: submitted/s, assigned/s, completed/s;
- latency: one request at a time to idle workers: submit-to-start p50 / p99.

Systems: ``switchyard`` (``manage.py serve``, the HTTP API, ``/ws/workers/``) and the baseline
``raw`` (benchmarks/raw_queue.py: the same frames and HTTP paths over plain ``websockets`` and
asyncio, one claim UPDATE and one complete UPDATE per request on the same kind of database). Every
Switchyard figure carries its ratio to the raw queue's for the same database and number of workers.

Bounded: every phase stops at its count or its deadline, and the run keeps to ``--budget-s``
(under five minutes by default, about a minute with ``--quick``) by shortening the deadlines: each
run gets a share of what is left (Switchyard's three times the raw queue's), each phase an equal
part of its run's share, never more than its nominal deadline (15 s) nor less than 3 s. Prints the
tables and writes ``benchmarks/results/work-<timestamp>.json``. Exit status 1 when a run failed, a
submission was refused, a worker got an ``error`` frame or a phase stalled (requests left, none
assigned for 5 s: a push that never came); a phase merely slower than its deadline is noted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import databases, work_report
from benchmarks.raw_queue import READY as RAW_READY
from benchmarks.raw_queue import WS_READY as RAW_WS_READY
from benchmarks.servers import QUIET, ROOT, SERVER_LOGS, ServerProcess, child_env

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SYSTEMS = ("raw", "switchyard")
DATABASES = ("sqlite", "postgres")
PHASES = ("backlog", "push", "latency")
# A load generator that outlives its time by this much is killed (it should never).
LOADGEN_GRACE_S = 60.0
BUDGET_S = 290.0
QUICK_BUDGET_S = 70.0
# Shares of the budget: Switchyard's runs take several times the raw queue's.
WEIGHTS = {"raw": 1, "switchyard": 3}
# Per run besides the load generator: a fresh database, migrations and workers, the server's start.
RUN_OVERHEAD_S = {"raw": 2.0, "switchyard": 12.0}


@dataclass(frozen=True)
class Size:
    requests: int  # per backlog and push phase
    latency_requests: int
    deadline_s: float  # per phase


# Switchyard hands out a few dozen requests a second per process on two shared cores (benchmarks/RESULTS.md):
# counts that finish well within the deadlines there, and a run of both databases within five minutes.
DEFAULT = Size(requests=200, latency_requests=100, deadline_s=15.0)
QUICK = Size(requests=50, latency_requests=20, deadline_s=5.0)

# Switchyard as the benchmarks run it (benchmarks/servers.py QUIET: no pings, no garbage collection, no
# connection limits), and besides: no worker check, so every request must reach a worker by a push (a lost
# push shows as a phase that does not finish); no outbox relay in the server (the work events are written in
# each transition's transaction, as always; publishing them is the relay's work, `make bench-outbox`).
WORK_QUIET = {"WORKER_CHECK_INTERVAL_S": "0", "OUTBOX_RELAY_TASKS": "0"}


def log(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Target:
    """A running server the load generator points at."""

    server: ServerProcess
    ws: str
    http: str
    keys: list[str]
    submitter: str
    database_url: str
    table: str


@contextmanager
def deploy(system: str, database: str, workers: int, server_log: str) -> Iterator[Target]:
    """``system`` on a fresh ``database``: started, and stopped (the database dropped) after."""
    with ExitStack() as stack:
        fresh = databases.fresh_sqlite() if database == "sqlite" else databases.fresh_postgres()
        url = stack.enter_context(fresh)
        if system == "raw":
            server = ServerProcess("raw queue", [sys.executable, "-m", "benchmarks.raw_queue", "--database-url", url],
                                   RAW_READY, child_env())
            stack.callback(server.stop)
            server.start()
            ws_port = next(int(line.split("=", 1)[1]) for line in server.output if line.startswith(RAW_WS_READY))
            yield Target(server, f"ws://127.0.0.1:{ws_port}/", f"http://127.0.0.1:{server.port}",
                         [f"raw-{n}" for n in range(workers)], "raw", url, "bench_raw_job")
            return
        done = subprocess.run([sys.executable, "-m", "benchmarks.work_provision", str(workers)], cwd=ROOT,
                              env=child_env(DATABASE_URL=url), check=True, capture_output=True, text=True,
                              timeout=180)
        provisioned = json.loads(done.stdout.strip().splitlines()[-1])
        env = child_env(DATABASE_URL=url, **SERVER_LOGS[server_log], **QUIET, **WORK_QUIET)
        server = ServerProcess("switchyard", [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port",
                                              "0", "--log-level", "warning"], "SWITCHYARD_READY port=", env)
        stack.callback(server.stop)
        server.start()
        yield Target(server, f"ws://127.0.0.1:{server.port}/ws/workers/", f"http://127.0.0.1:{server.port}",
                     provisioned["workers"], provisioned["submitter"], url, "work_workrequest")


def share_s(budget_s: float, elapsed_s: float, runs: list[str]) -> float:
    """The time of the first of ``runs`` (systems still to run, this one first) in what is left of the
    budget, by weight; 0 (none) without a budget."""
    if budget_s <= 0:
        return 0.0
    left = budget_s - elapsed_s - sum(RUN_OVERHEAD_S[system] for system in runs)
    # Never 0, which would mean no budget: a run out of time gets its phases' shortest deadlines.
    return max(1.0, left * WEIGHTS[runs[0]] / sum(WEIGHTS[system] for system in runs))


def run_loadgen(target: Target, workers: list[int], size: Size, phases: list[str], budget_s: float) -> dict[str, Any]:
    config = {"ws": target.ws, "http": target.http, "keys": target.keys, "submitter": target.submitter,
              "database_url": target.database_url, "table": target.table, "workers": workers,
              "requests": size.requests, "latency_requests": size.latency_requests,
              "deadline_s": size.deadline_s, "budget_s": budget_s, "server_pid": target.server.pid,
              "phases": phases}
    bound = max(budget_s, size.deadline_s * len(phases) * len(workers)) + LOADGEN_GRACE_S
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.work_loadgen", json.dumps(config)], cwd=ROOT,
                              env=child_env(), stdout=subprocess.PIPE, text=True, timeout=bound)
    except subprocess.TimeoutExpired:
        return {str(n): {"error": f"load generator exceeded {bound:.0f} s"} for n in workers}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {str(n): {"error": f"load generator rc={done.returncode}"} for n in workers}
    results: dict[str, Any] = json.loads(lines[-1])
    return results


def summary(results: dict[str, Any]) -> str:
    parts = []
    for count, row in results.items():
        if "error" in row:
            parts.append(f"{count}: ERROR {row['error']}")
            continue
        push, latency = row.get("push") or {}, (row.get("latency") or {}).get("start_ms") or {}
        parts.append(f"{count}: push {push.get('completed_per_s', '-')}/s, start p50 {latency.get('p50', '-')} ms")
    return "; ".join(parts)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts and deadlines (about a minute)")
    parser.add_argument("--databases", default=",".join(DATABASES),
                        help="sqlite, postgres or both (postgres only when 127.0.0.1:5432 answers)")
    parser.add_argument("--workers", default="1,10,50", help="numbers of connected workers, one run each")
    parser.add_argument("--phases", default=",".join(PHASES), help="backlog, push, latency (default: all)")
    parser.add_argument("--requests", type=int, help="requests per backlog and push phase")
    parser.add_argument("--latency-requests", type=int, help="requests of the latency phase")
    parser.add_argument("--budget-s", type=float,
                        help=f"shorten the deadlines to end the run within this (0: no budget; default {BUDGET_S:g}, "
                             f"{QUICK_BUDGET_S:g} with --quick)")
    parser.add_argument("--server-log", choices=SERVER_LOGS, default="quiet")
    args = parser.parse_args(argv)
    args.database_list = [d.strip() for d in args.databases.split(",") if d.strip()]
    args.worker_list = [int(n) for n in args.workers.split(",")]
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    if set(args.database_list) - set(DATABASES) or set(args.phase_list) - set(PHASES) or min(args.worker_list) < 1:
        parser.error(f"databases among {DATABASES}, phases among {PHASES}, workers at least 1")
    base = QUICK if args.quick else DEFAULT
    if args.budget_s is None:
        args.budget_s = QUICK_BUDGET_S if args.quick else BUDGET_S
    args.size = Size(args.requests or base.requests, args.latency_requests or base.latency_requests, base.deadline_s)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    chosen = list(args.database_list)
    if "postgres" in chosen and not databases.reachable("127.0.0.1", 5432):
        log("PostgreSQL does not answer on 127.0.0.1:5432: SQLite only", started)
        chosen.remove("postgres")
    runs = [(database, system) for database in chosen for system in SYSTEMS]
    results: dict[str, dict[str, Any]] = {database: {} for database in chosen}
    load_before = os.getloadavg()
    workers = max(args.worker_list)
    failed = False
    for n, (database, system) in enumerate(runs):
        budget_s = share_s(args.budget_s, time.monotonic() - started, [s for _, s in runs[n:]])
        log(f"{database} {system}: starting ({f'{budget_s:.0f} s' if budget_s else 'no budget'})", started)
        try:
            with deploy(system, database, workers, args.server_log) as target:
                found = run_loadgen(target, args.worker_list, args.size, args.phase_list, budget_s)
                if not target.server.alive():
                    failed = True
                    for row in found.values():
                        row.setdefault("error", "the server process died")
        except Exception as exc:  # one that cannot start must not stop the others
            found = {str(n): {"error": f"failed: {exc}"[:300]} for n in args.worker_list}
        results[database][system] = found
        log(f"{database} {system}: {summary(found)}", started)
        failed = failed or any(work_report.broken(row) for row in found.values())
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    print()
    for database in chosen:
        name = "SQLite" if database == "sqlite" else "PostgreSQL"
        detail = (f"{args.size.requests:,} noop requests per backlog / push phase, bulks of 100; "
                  f"latency: {args.size.latency_requests:,} one at a time")
        print(work_report.table(f"Work requests on {name}: throughput  [{detail}]", work_report.THROUGHPUT,
                                results[database], args.worker_list, cpu_phase="push"))
        print(work_report.table(f"Work requests on {name}: submit-to-start latency (idle workers)",
                                work_report.LATENCY, results[database], args.worker_list, cpu_phase=None))
    print("ratios: switchyard / raw queue of this run with as many workers (rates: above 1x is faster; "
          "latency: above 1x is slower). cpu srv/lg: cores used by the server / load generator during push.")
    print(f"run time {elapsed:.0f} s on {os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after{' (quick)' if args.quick else ''}")
    path = write_json(args, results, elapsed, load_before, load_after)
    print(f"results: {path.relative_to(ROOT)}")
    return 1 if failed else 0


def write_json(args: argparse.Namespace, results: dict[str, Any], elapsed: float,
               load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    document = {"started": stamp, "commit": commit, "quick": args.quick, "elapsed_s": round(elapsed, 1),
                "cpus": os.cpu_count(), "load_average": {"before": load_before, "after": load_after},
                "size": asdict(args.size), "workers": args.worker_list, "phases": args.phase_list,
                "results": results}
    path = RESULTS_DIR / f"work-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
