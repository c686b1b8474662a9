"""Run the benchmark suite: every workload against the raw relay and each Switchyard configuration.

    python -m benchmarks.run [--quick] [--only W1,W3] [--configs sqlite-cache,pg-redis-cache-2p]

Configurations: the raw ``websockets`` relay; Switchyard on SQLite with the policies disabled,
cache and store; and, when PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer,
Switchyard on PostgreSQL + Redis with one and with two server processes. Each gets fresh server
processes and a fresh database. Prints one table per workload and writes the full results to
``benchmarks/results/<timestamp>.json``. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import databases, report, targets
from benchmarks.budget import TimeBudget
from benchmarks.configs import RAW, Config, Deployment, all_configs, deploy
from benchmarks.servers import ROOT, SERVER_LOGS, child_env

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORKLOADS = ("W1", "W2", "W3", "W4")
# A load generator that outlives its own deadline by this much is killed (it should never).
LOADGEN_GRACE_S = 45.0


@dataclass(frozen=True)
class Size:
    count: int
    deadline_s: float


# Counts first, deadlines as the bound when the machine is slow or busy. The default run has six
# configurations and must stay under five minutes on two cores.
DEFAULT = {"W1": Size(20_000, 15), "W2": Size(5_000, 15), "W3": Size(1_000, 15), "W4": Size(10_000, 20)}
QUICK = {"W1": Size(3_000, 8), "W2": Size(1_000, 8), "W3": Size(200, 6), "W4": Size(1_000, 10)}
# The default run must end within five minutes, also when other jobs share the machine.
BUDGET_S = 280.0

DETAIL = {
    "W1": "{count} messages, window 100, 256 B payload",
    "W2": "{count} messages x 10 consumers, window 100, 256 B payload",
    "W3": "{count} round trips, 256 B payload",
    "W4": "{count} sockets, 200 handshakes in flight",
}


def log(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def roles(workload: str, deployment: Deployment) -> tuple[str, list[str], list[int]]:
    """Producer base, consumer bases and the server pids to watch. With two processes the producer
    (the requester, for W3) is on A and the consumers are on B, or spread over A and B for W2, so
    every delivery that can cross the backplane does."""
    a = deployment.servers[0]
    b = deployment.servers[-1]
    pids = deployment.pids
    if workload == "W2":
        return a.ws, [s.ws for s in deployment.servers], pids
    if workload == "W4":
        return a.ws, [a.ws], [a.pid]
    return a.ws, [b.ws], pids


def run_loadgen(workload: str, deployment: Deployment, topic: str, size: Size) -> dict[str, Any]:
    producer, consumers, pids = roles(workload, deployment)
    argv = [sys.executable, "-m", "benchmarks.loadgen", workload, "--producer", producer, "--topic", topic,
            "--count", str(size.count), "--deadline-s", str(size.deadline_s)]
    for base in consumers:
        argv += ["--consumer", base]
    for pid in pids:
        argv += ["--server-pid", str(pid)]
    try:
        done = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                              timeout=size.deadline_s + LOADGEN_GRACE_S)
    except subprocess.TimeoutExpired:
        return {"workload": workload, "error": f"load generator exceeded {size.deadline_s + LOADGEN_GRACE_S:.0f}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"workload": workload, "error": f"load generator rc={done.returncode}: {' | '.join(tail)[:300]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def summary_line(workload: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    metric = report.METRICS[workload][0]
    value = report.value_at(result, metric.path)
    shown = "-" if value is None else f"{value:,.{metric.decimals}f}"
    return f"{metric.title} {shown}, lost {result.get('lost', '-')}, {result.get('elapsed_s', '?')}s"


def run_config(config: Config, workloads: list[str], sizes: dict[str, Size], run_id: str,
               budget: TimeBudget, started: float, server_log: str = "quiet") -> dict[str, dict[str, Any]]:
    topics = {w: f"bench-{run_id}-{w.lower()}" for w in workloads}
    results: dict[str, dict[str, Any]] = {}
    log(f"{config.label}: starting", started)
    budget.start_config()
    try:
        with deploy(config, list(topics.values()), server_log) as deployment:
            for workload in workloads:
                if not deployment.alive():
                    results[workload] = {"workload": workload, "error": "server process died"}
                    budget.ran()
                    continue
                size = Size(sizes[workload].count, budget.deadline(sizes[workload].deadline_s))
                result = run_loadgen(workload, deployment, topics[workload], size)
                budget.ran()
                result["deadline_s"] = size.deadline_s
                if not deployment.alive():
                    result.setdefault("error", "server process died during the workload")
                results[workload] = result
                log(f"{config.label} {workload}: {summary_line(workload, result)}", started)
    except Exception as exc:  # a configuration that cannot start must not stop the others
        log(f"{config.label}: FAILED: {exc}", started)
        for workload in workloads:
            if workload not in results:
                results[workload] = {"workload": workload, "error": f"configuration failed: {exc}"[:300]}
                budget.ran()
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark Switchyard against a raw websockets relay.")
    parser.add_argument("--quick", action="store_true", help="smaller counts (a sanity check, ~1 minute)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. W1,W3")
    parser.add_argument("--configs", default="",
                        help="configuration keys to run (the raw relay always runs), e.g. sqlite-cache")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL + Redis even when reachable")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="shorten the last workloads' deadlines to end the run within this (0: no budget)")
    parser.add_argument("--server-log", choices=SERVER_LOGS, default="quiet",
                        help="Switchyard's logging: quiet (WARNING), info (INFO, ACCESS_LOG=false) or access "
                             "(INFO and the access log: the defaults) (default: %(default)s)")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if w in args.workloads]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    sizes = QUICK if args.quick else DEFAULT
    with_postgres = not args.no_postgres and databases.postgres_and_redis_reachable()
    configs = all_configs(with_postgres)
    if args.configs:
        wanted = {k.strip() for k in args.configs.split(",")}
        unknown = wanted - {c.key for c in configs}
        if unknown:
            print(f"unknown or unavailable configurations: {sorted(unknown)}; "
                  f"available: {[c.key for c in configs]}", file=sys.stderr)
            return 2
        configs = [c for c in configs if c.raw or c.key in wanted]
    if not with_postgres:
        log("PostgreSQL or Redis not reachable on 127.0.0.1 (or --no-postgres): SQLite configurations only", started)
    run_id = uuid.uuid4().hex[:6]
    load_before = os.getloadavg()
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    budget = TimeBudget(args.budget_s, runs_left=len(configs) * len(args.workloads), configs_left=len(configs))
    for config in configs:
        rows[config.key] = run_config(config, args.workloads, sizes, run_id, budget, started,
                                     args.server_log)
    elapsed = time.monotonic() - started

    tables = []
    for workload in args.workloads:
        detail = DETAIL[workload].format(count=f"{sizes[workload].count:,}")
        tables.append(report.table(workload, [(c, rows[c.key].get(workload)) for c in configs], detail))
    losses = [(c, w) for c in configs for w in args.workloads if report.storing_loss(c, rows[c.key].get(w))]
    load_after = os.getloadavg()
    print()
    print("\n".join(tables))
    print(f"ratios are value / raw relay of this run ({RAW.label}); rates: higher is better, "
          f"latency and KiB/conn: lower is better. cpu srv/lg = cores used by server(s) / load generator.")
    print()
    print(targets.table({c.key: rows[c.key] for c in configs}, rows.get(RAW.key, {})))
    print(f"run time {elapsed:.0f}s on {os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after{' (quick)' if args.quick else ''}")
    path = write_json(args, sizes, configs, rows, elapsed, load_before, load_after)
    print(f"results: {path.relative_to(ROOT)}")
    if losses:
        print("\n" + "!" * 78)
        for config, workload in losses:
            print(f"!!! LOSS under a storing policy: {config.label} {workload} lost "
                  f"{rows[config.key][workload]['lost']} acked message(s)")
        print("!" * 78)
        return 1
    return 0


def write_json(args: argparse.Namespace, sizes: dict[str, Size], configs: list[Config],
               rows: dict[str, dict[str, dict[str, Any]]], elapsed: float,
               load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    raw = rows.get(RAW.key, {})
    document = {
        "started": stamp,
        "commit": commit,
        "quick": args.quick,
        "server_log": args.server_log,
        "elapsed_s": round(elapsed, 1),
        "cpus": os.cpu_count(),
        "load_average": {"before": load_before, "after": load_after},
        "sizes": {w: asdict(sizes[w]) for w in args.workloads},
        "configs": [
            {
                **asdict(config),
                "results": rows[config.key],
                "ratios": {
                    w: {m.title: report.ratio(report.value_at(rows[config.key].get(w), m.path),
                                              report.value_at(raw.get(w), m.path))
                        for m in report.METRICS[w]}
                    for w in args.workloads
                },
            }
            for config in configs
        ],
    }
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
