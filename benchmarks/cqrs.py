"""CQRS replication benchmark on PostgreSQL + RabbitMQ: Switchyard against django-cqrs 3.1.0, same run.

    python -m benchmarks.cqrs [--changes 2000] [--batches 1,100] [--paced-rate 100] [--rounds 3]

Both replicate the same changes from a master database to a replica database of their own:

- Switchyard: the master app (tests/apps/cqrs_master via SWITCHYARD_APPS) writes each change and its
  outbox row in one transaction; ``manage.py outbox_relay`` publishes them to RabbitMQ with publisher
  confirms; ``manage.py cqrs_consume`` applies them to the replica app (tests/apps/cqrs_replica).
- django-cqrs (the baseline): the real django-cqrs in ``.venv-djcqrs`` (``make djcqrs-env``), project
  tests/djcqrs_project: its master publishes from ``on_commit``, its ``cqrs_consume`` applies.

The master application (benchmarks/cqrs_writer.py, in each side's own Python) creates N/2 rows, then
updates each once: N changes as fast as it can at each batch size (changes per transaction), then
N/2 changes at a steady rate both keep up with (lag without a backlog). Per side and pass: end to end
(N over first write -> the poll, every 10 ms, that sees every row at the replica at its final
revision), master writes/s (django-cqrs's publishing included: it runs in the writer's thread), lag
p50/p99 (a change's commit -> the first poll that saw it), lost (N less the changes the replica
shows as rows + revisions, and rows differing from the master).

Each pass runs on django-cqrs, then on Switchyard, the whole set ``--rounds`` times: figures are the
rounds' medians, each with its ratio to django-cqrs's. Fresh databases, exchanges and queues of the
run's own, removed at the end; every process it starts is stopped; each pass is bounded by a
deadline. Exit status 1 when a change was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import databases
from benchmarks.procstat import tree_cpu_s
from benchmarks.servers import ROOT, ServerProcess, child_env
from benchmarks.stats import latency_summary_ms, rate

AMQP_URL = os.environ.get("SWITCHYARD_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
PROJECT = ROOT / "tests" / "djcqrs_project"
DJCQRS_PYTHON = ROOT / ".venv-djcqrs" / "bin" / "python"
WRITER = Path(__file__).resolve().parent / "cqrs_writer.py"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
POLL_S = 0.01
WARMUP_DEADLINE_S = 60.0
# The replica ids both sides' consumers bind (a queue declared ahead for django-cqrs's consumer, which
# says nothing when it is ready, must have the bindings it would make).
DJCQRS_CQRS_IDS = ("test_author", "test_book")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Side:
    """One system under test: how to run its master application, its processes, and where its rows are."""

    name: str
    python: Path
    cwd: Path
    master_env: dict[str, str]
    replica_env: dict[str, str]
    master_model: str
    master_table: str
    replica_table: str
    master_url: str
    replica_url: str
    exchanges: list[str]
    queue: str
    processes: list[ServerProcess] = field(default_factory=list)


def switchyard_side(master_url: str, replica_url: str, tag: str) -> Side:
    exchange, events, queue = f"bench.cqrs.sy.{tag}", f"bench.events.sy.{tag}", f"bench_cqrs_sy_{tag}"
    common = {"SWITCHYARD_APPS": "tests.apps.cqrs_master,tests.apps.cqrs_replica", "AMQP_URL": AMQP_URL,
              "OUTBOX_TARGET": "rabbitmq", "CQRS_EXCHANGE": exchange, "OUTBOX_AMQP_EXCHANGE": events,
              "SWITCHYARD_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "settings", "PYTHONPATH": str(ROOT)}
    side = Side("switchyard", Path(sys.executable), ROOT, child_env(DATABASE_URL=master_url, **common),
                child_env(DATABASE_URL=replica_url, CQRS_QUEUE=queue, **common), "cqrs_master.Author",
                "cqrs_master_author", "cqrs_replica_author", master_url, replica_url, [exchange, events], queue)
    side.processes = [
        # The consumer first: its queue is declared and bound before anything is published.
        ServerProcess("cqrs_consume", [sys.executable, "manage.py", "cqrs_consume"], "SWITCHYARD_CQRS_READY",
                      side.replica_env),
        ServerProcess("outbox_relay", [sys.executable, "manage.py", "outbox_relay"], "SWITCHYARD_RELAY_READY",
                      side.master_env),
    ]
    return side


def djcqrs_side(master_url: str, replica_url: str, tag: str) -> Side:
    exchange, queue = f"bench.cqrs.dj.{tag}", f"bench_cqrs_dj_{tag}"

    def env(url: str) -> dict[str, str]:
        # Not this process's environment: that may name Switchyard's settings and database.
        return {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(PROJECT),
                "DJANGO_SETTINGS_MODULE": "djcqrs_settings", "DJCQRS_DATABASE_URL": url,
                "DJCQRS_AMQP_URL": AMQP_URL, "DJCQRS_EXCHANGE": exchange, "DJCQRS_QUEUE": queue,
                "DJCQRS_LOG_LEVEL": "WARNING"}

    side = Side("django-cqrs", DJCQRS_PYTHON, PROJECT, env(master_url), env(replica_url), "interop.Writer",
                "interop_writer", "interop_authorreplica", master_url, replica_url, [exchange], queue)
    side.processes = [ServerProcess("django-cqrs cqrs_consume", [str(DJCQRS_PYTHON), "manage.py", "cqrs_consume"],
                                    None, side.replica_env, cwd=PROJECT)]
    return side


def migrate(side: Side) -> None:
    for env in (side.master_env, side.replica_env):
        subprocess.run([str(side.python), "manage.py", "migrate", "--noinput", "-v0"], cwd=side.cwd, env=env,
                       check=True, timeout=180)


async def declare_djcqrs_queue(side: Side) -> None:
    """django-cqrs's replica queue and bindings, as its consumer declares them (the interop tests do
    the same): nothing published before the consumer runs is dropped as unroutable."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(side.exchanges[0], "topic", durable=True)
        queue = await channel.declare_queue(side.queue, durable=True)
        for cqrs_id in DJCQRS_CQRS_IDS:
            await queue.bind(exchange, cqrs_id)


async def remove_broker_names(sides: list[Side]) -> None:
    """The run's queues (and their dead letter queues) and exchanges; deleting a missing one is a no-op."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        for side in sides:
            for queue in (side.queue, f"dead_letter_{side.queue}"):
                await channel.queue_delete(queue)
            for exchange in side.exchanges:
                await channel.exchange_delete(exchange)


class Replica:
    """The replica's table, read as a replica's user would see it (autocommit: a fresh snapshot per poll)."""

    def __init__(self, url: str, table: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.table = table

    def revisions(self, above: int) -> list[tuple[int, int]]:
        return self.conn.execute(f"SELECT id, cqrs_revision FROM {self.table} WHERE id > %s", (above,)).fetchall()

    def watch(self, above: int, rows: int, final: int, deadline: float) -> tuple[float | None, dict[Any, float]]:
        """Poll until ``rows`` rows above pk ``above`` are at revision ``final``: when that poll was made
        (None past the deadline), and when each (pk, revision) was first seen."""
        seen: dict[int, int] = {}
        first: dict[tuple[int, int], float] = {}
        at_final = 0
        while True:
            polled = time.time()  # the snapshot: every row it shows was committed before it
            for pk, revision in self.revisions(above):
                before = seen.get(pk, -1)
                if revision > before:
                    first.update(((pk, r), polled) for r in range(before + 1, revision + 1))
                    seen[pk] = revision
                    at_final += before < final <= revision
            if at_final >= rows:
                return polled, first
            if polled > deadline:
                return None, first
            time.sleep(POLL_S)

    def close(self) -> None:
        self.conn.close()


def rows_of(url: str, table: str, above: int) -> dict[int, tuple[str, int]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {pk: (name, revision) for pk, name, revision in
                conn.execute(f"SELECT id, name, cqrs_revision FROM {table} WHERE id > %s", (above,))}


@dataclass(frozen=True)
class Pass:
    title: str
    changes: int
    batch: int
    per_s: float = 0.0  # 0: as fast as the master application can


def passes(args: argparse.Namespace) -> dict[str, Pass]:
    found = {f"batch {b}": Pass(f"{b} change{'s' if b > 1 else ''} per transaction", args.changes, b)
             for b in args.batches}
    if args.paced_rate:
        found[f"paced {args.paced_rate:g}/s"] = Pass(
            f"{args.changes // 2:,} changes at {args.paced_rate:g}/s, 1 per transaction",
            args.changes // 2 + args.changes // 2 % 2, 1, args.paced_rate)
    return found


def run_pass(side: Side, replica: Replica, floor: int, run: Pass, warmup: int,
             deadline_s: float) -> tuple[dict[str, Any], int]:
    """One writer process: warm-up rows, then the pass's changes. Returns the figures and the highest pk
    written (the next pass's floor)."""
    rows = run.changes // 2
    writer = subprocess.Popen([str(side.python), str(WRITER), side.master_model, str(rows), str(run.batch),
                               str(run.per_s), str(warmup)],
                              cwd=side.cwd, env=side.master_env, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert writer.stdin is not None and writer.stdout is not None
    try:
        warm = writer.stdout.readline().split()
        if not warm or warm[0] != "WARM":
            raise RuntimeError(f"{side.name}: the writer did not warm up")
        warm_top = int(warm[1])
        done, _ = replica.watch(floor, warmup, 1, time.time() + WARMUP_DEADLINE_S)
        if done is None:
            raise RuntimeError(f"{side.name}: the warm-up rows did not reach the replica")
        cpu_before = {p.name: tree_cpu_s(p.pid) for p in side.processes}
        writer.stdin.write("go\n")
        writer.stdin.flush()
        started = time.time()
        done, first = replica.watch(warm_top, rows, 1, started + deadline_s)
        cpu = {p.name: tree_cpu_s(p.pid) - cpu_before[p.name] for p in side.processes}
        out, _ = writer.communicate(timeout=deadline_s)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    written = json.loads(out)
    changes: list[list[float]] = written["changes"]
    top = max(int(pk) for pk, _, _ in changes)
    count, started = len(changes), written["started"]
    elapsed = (done or time.time()) - started
    master = rows_of(side.master_url, side.master_table, warm_top)
    replica_rows = rows_of(side.replica_url, side.replica_table, warm_top)
    shown = len(replica_rows) + sum(revision for _, revision in replica_rows.values())
    cpu["writer"] = written["cpu_s"]
    return {
        "changes": count, "batch": run.batch, "per_s": run.per_s, "complete": done is not None,
        "seconds": round(elapsed, 3), "changes_per_s": rate(count, elapsed),
        "master_writes_per_s": rate(count, max(t for _, _, t in changes) - started),
        "lag_ms": latency_summary_ms([first[(int(pk), int(r))] - t for pk, r, t in changes if (pk, r) in first]),
        "replica_rows": len(replica_rows), "lost": count - shown,
        "differing": sum(1 for pk, row in master.items() if replica_rows.get(pk, row) != row),
        "cpu": {name: round(used / elapsed, 2) for name, used in cpu.items()},
    }, top


def start(side: Side, stack: ExitStack) -> Replica:
    """Migrate the side's databases, start its processes; ``stack`` stops them."""
    log(f"{side.name}: migrating the master and replica databases, starting its processes")
    migrate(side)
    if side.name == "django-cqrs":
        asyncio.run(declare_djcqrs_queue(side))
    for process in side.processes:
        stack.callback(process.stop)
        process.start()
    replica = Replica(side.replica_url, side.replica_table)
    stack.callback(replica.close)
    return replica


def run_rounds(sides: list[Side], replicas: list[Replica], args: argparse.Namespace) -> dict[str, Any]:
    """Every pass on every side in turn, ``args.rounds`` times: the two figures of a ratio are taken
    seconds apart, and the rounds' median outlasts a burst of load from other jobs on the machine."""
    results: dict[str, Any] = {side.name: {key: [] for key in passes(args)} for side in sides}
    floors = [0 for _ in sides]
    for round_no in range(1, args.rounds + 1):
        for key, run in passes(args).items():
            for n, (side, replica) in enumerate(zip(sides, replicas, strict=True)):
                log(f"round {round_no}/{args.rounds}, {side.name}: {run.title}")
                row, floors[n] = run_pass(side, replica, floors[n], run, args.warmup, args.deadline_s)
                results[side.name][key].append(row)
                for process in side.processes:
                    if not process.alive():
                        raise RuntimeError(f"{process.name} exited:\n" + "".join(process.output))
    return results


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds; losses added up."""

    def median(values: list[float | None]) -> float | None:
        present = [value for value in values if value is not None]
        return round(statistics.median(present), 3) if present else None

    return {
        "rounds": len(rounds), "complete": all(r["complete"] for r in rounds),
        "changes_per_s": median([r["changes_per_s"] for r in rounds]),
        "master_writes_per_s": median([r["master_writes_per_s"] for r in rounds]),
        "lag_ms": {q: median([r["lag_ms"][q] for r in rounds]) for q in ("p50", "p99")},
        "replica_rows": min(r["replica_rows"] for r in rounds),
        "lost": sum(r["lost"] for r in rounds), "differing": sum(r["differing"] for r in rounds),
        "cpu": {name: median([r["cpu"].get(name) for r in rounds]) for name in rounds[0]["cpu"]},
    }


def cell(value: float | None, base: float | None, decimals: int = 0) -> str:
    if value is None:
        return "-"
    text = f"{value:,.{decimals}f}"
    return f"{text} ({value / base:.2f}x)" if base else text


def print_report(results: dict[str, Any]) -> None:
    rows = results["changes"] // 2
    print(f"\nCQRS replication master -> replica, PostgreSQL + RabbitMQ  [{results['changes']:,} changes: "
          f"{rows:,} creates, then {rows:,} updates; median of {results['rounds']} round(s)]")
    print("ratios: Switchyard / django-cqrs of the same run (rates: above 1x is faster; lag: above 1x is slower)")
    for key, title in results["passes"].items():
        print(f"\n{title}")
        print(f"{'system':<13}{'e2e changes/s':>17}{'master writes/s':>19}{'lag p50 ms':>19}{'lag p99 ms':>19}"
              f"{'rows':>7}{'lost':>6}  cpu writer/relay/consumer")
        base = results["sides"].get("django-cqrs", {}).get(key, {})
        for name, side in results["sides"].items():
            row = side.get(key)
            if row is None:
                continue
            lag, base_lag = row["lag_ms"], base.get("lag_ms", {})
            cpu = row["cpu"]
            cpus = "/".join(f"{cpu[k]:.2f}" if k in cpu else "-" for k in
                            ("writer", "outbox_relay", "cqrs_consume" if name == "switchyard"
                             else "django-cqrs cqrs_consume"))
            lost = row["lost"] + row["differing"]
            print(f"{name:<13}{cell(row['changes_per_s'], base.get('changes_per_s')):>17}"
                  f"{cell(row['master_writes_per_s'], base.get('master_writes_per_s')):>19}"
                  f"{cell(lag['p50'], base_lag.get('p50'), 1):>19}{cell(lag['p99'], base_lag.get('p99'), 1):>19}"
                  f"{row['replica_rows']:>7}{lost:>6}  {cpus}{'' if row['complete'] else '  INCOMPLETE'}")
        each = results["runs"]
        if len(each) == 2 and results["rounds"] > 1:
            ratios = [sy["changes_per_s"] / dj["changes_per_s"] if dj["changes_per_s"] else 0.0
                      for dj, sy in zip(each["django-cqrs"][key], each["switchyard"][key], strict=True)]
            print("e2e ratio by round: " + ", ".join(f"{r:.2f}x" for r in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=2_000, help="changes per pass (half creates, half updates)")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100],
                        help="changes per transaction, one pass each")
    parser.add_argument("--paced-rate", type=float, default=100.0,
                        help="changes per second of the last pass (N/2 changes; 0: no such pass)")
    parser.add_argument("--warmup", type=int, default=20, help="rows written (and replicated) before each pass")
    parser.add_argument("--rounds", type=int, default=3, help="every pass this many times; medians are shown")
    parser.add_argument("--deadline-s", type=float, default=120.0, help="bound on each pass")
    args = parser.parse_args()
    if args.changes < 2 or args.changes % 2 or args.rounds < 1:
        parser.error("--changes must be an even number of at least 2, --rounds at least 1")
    if not (databases.reachable("127.0.0.1", 5432) and databases.reachable("127.0.0.1", 5672)):
        sys.exit("the CQRS benchmark needs PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672")
    if not DJCQRS_PYTHON.exists():
        sys.exit(f"{DJCQRS_PYTHON} is missing: `make djcqrs-env` installs django-cqrs 3.1.0")
    tag = uuid.uuid4().hex[:8]
    results: dict[str, Any] = {"changes": args.changes, "rounds": args.rounds, "sides": {},
                               "passes": {key: run.title for key, run in passes(args).items()}}
    wall = time.perf_counter()
    with ExitStack() as stack:
        # django-cqrs first: the baseline of the ratios. Cleanup runs in reverse: processes stopped,
        # then the broker's names removed, then the databases dropped.
        sides = [make_side(stack.enter_context(databases.fresh_postgres()),
                           stack.enter_context(databases.fresh_postgres()), tag)
                 for make_side in (djcqrs_side, switchyard_side)]
        stack.callback(lambda: asyncio.run(remove_broker_names(sides)))
        replicas = [start(side, stack) for side in sides]
        results["runs"] = run_rounds(sides, replicas, args)
    results["sides"] = {name: {key: summarise(rows) for key, rows in by_pass.items()}
                        for name, by_pass in results["runs"].items()}
    results["wall_s"] = round(time.perf_counter() - wall, 1)
    print_report(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"cqrs-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nfull results: {path} ({results['wall_s']} s)")
    if any(row["lost"] or row["differing"] or not row["complete"]
           for side in results["sides"].values() for row in side.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
