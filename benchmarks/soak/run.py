"""`make soak`: mixed traffic against one Switchyard server for minutes; figures per interval, a verdict.

    python -m benchmarks.soak [--minutes 10] [--interval-s 60] [--postgres] [--messages-per-s 50 ...]

One server process on a fresh database (default: SQLite and the in-memory channel layer; ``--postgres``:
PostgreSQL + Redis, and RabbitMQ as the outbox target when it answers on 127.0.0.1:5672), its relays on as
in production (ping, garbage collection, outbox), the connection-rate limits off (the churn comes from one
address). All at once, at fixed offered rates (a soak measures stability, not the ceiling):

- two streams, on a ``cache`` and on a ``store`` topic: a producer each (100 acks outstanding at most),
  ``--consumers`` consumers each, every delivery acked;
- request/reply through a response topic, one call at a time, as a DASF client and backend module do;
- outbox events emitted over HTTP, counted where they arrive (the target topic, or the RabbitMQ exchange);
- work requests submitted over HTTP, taken and completed by ``--workers`` worker sockets;
- connection churn: producer sockets that each publish one message, read its ack and close.

Every interval: deliveries/s, producer -> consumer p99, round trips/s and their p99, outbox arrivals/s,
work requests completed/s, churn connections/s, server RSS, open descriptors, CPU, errors (the clients'
and the server's ERROR lines). The server's RSS is also sampled every few seconds for the verdict
(benchmarks/soak/verdict.py). Afterwards each part gets DRAIN_S to finish, and losses are counted.
Results: benchmarks/results/soak-<time>.{json,md,png}. Exit status 1 unless the verdict passes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import deque
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks import databases, servers
from benchmarks.connections import raise_open_file_limit
from benchmarks.outbox import AMQP_URL
from benchmarks.procstat import cpu_s, own_cpu_s, rss_kib
from benchmarks.soak import report, verdict
from benchmarks.soak.jobs import Outbox, Pool, Work, unpublished
from benchmarks.soak.traffic import Churn, Errors, RequestReply, Stream
from benchmarks.stats import percentile
from benchmarks.work_clients import Database

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
DRAIN_S = 30.0
TOPICS = {"soak-cache": "cache", "soak-store": "store", "soak-rpc": "cache", "soak-events": "cache",
          # Churn is about connections: its messages have no consumer and need no storing.
          "soak-churn": "disabled"}


class ServerLog(deque[str]):
    """The server's output (its last lines, as ServerProcess keeps them), with its JSON log lines counted
    by level as they come."""

    def __init__(self) -> None:
        super().__init__(maxlen=200)
        self.errors = 0
        self.warnings = 0
        self.first_error: str | None = None

    def append(self, line: str) -> None:
        super().append(line)
        try:
            record = orjson.loads(line)
            level = record.get("level")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if level in ("ERROR", "CRITICAL"):
            self.errors += 1
            # The traceback's last line says what went wrong; the whole record is in the server's output.
            cause = (record.get("exception") or "").strip().splitlines()[-1:]
            self.first_error = self.first_error or ": ".join(
                str(part) for part in (record.get("logger"), record.get("message"), *cause))[:500]
        elif level == "WARNING":
            self.warnings += 1


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def ms_at(seconds: list[float], q: float) -> float | None:
    value = percentile(seconds, q)
    return None if value is None else round(value * 1000, 2)


class Soak:
    def __init__(self, args: argparse.Namespace, server: servers.ServerProcess, log: ServerLog,
                 provisioned: dict[str, Any], database_url: str, outbox_target: str, outbox_destination: str) -> None:
        self.args, self.server, self.log = args, server, log
        self.errors = Errors()
        base, http = server.ws, f"http://127.0.0.1:{server.port}"
        capacity = int(args.messages_per_s * args.minutes * 60 * 1.1) + 1000
        self.streams = [Stream(base, topic, args.consumers, args.messages_per_s, capacity, self.errors)
                        for topic in ("soak-cache", "soak-store")]
        self.rr = RequestReply(base, "soak-rpc", args.requests_per_s, self.errors)
        self.churn = Churn(base, "soak-churn", args.churn_per_s, self.errors)
        self.db = Database(database_url, "work_workrequest")
        self.outbox = Outbox(Pool(http, provisioned["admin"]), base, outbox_target, outbox_destination, self.errors)
        self.work = Work(Pool(http, provisioned["admin"]), f"{base}workers/", provisioned["workers"], self.db,
                         self.errors)
        self.rows: list[dict[str, Any]] = []
        self.rss_samples: list[tuple[float, float]] = []

    @property
    def consumers(self) -> list[Any]:
        """The streams' consumers (opened by ``run``)."""
        return [c for s in self.streams for c in s.consumers]

    def totals(self) -> dict[str, Any]:
        """Cumulative counts, and how many latencies each list (they only grow) held."""
        return {
            "delivered": sum(s.delivered for s in self.streams),
            "e2e_marks": [len(c.latencies) for c in self.consumers],
            "round_trips": len(self.rr.rtts),
            "outbox": len(self.outbox.arrived), "work": self.work.completed(), "churn": self.churn.done,
            "sent": sum(s.producer.sent for s in self.streams), "emitted": len(self.outbox.emitted),
            "submitted": self.work.submitted, "unpublished": unpublished(self.db),
            "errors": self.errors.total + self.log.errors,
            "server_cpu_s": cpu_s(self.server.pid), "own_cpu_s": own_cpu_s(), "t": time.monotonic(),
        }

    def row(self, t0: float, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        wall = after["t"] - before["t"]
        e2e = [x for c, start, end in zip(self.consumers, before["e2e_marks"], after["e2e_marks"], strict=True)
               for x in c.latencies[start:end]]

        def per_s(key: str) -> float:
            return round((after[key] - before[key]) / wall, 1) if wall > 0 else 0.0

        return {
            "t_min": round((after["t"] - t0) / 60, 2),
            "delivered_per_s": per_s("delivered"),
            "delivery_p50_ms": ms_at(e2e, 50),
            "delivery_p99_ms": ms_at(e2e, 99),
            "round_trips_per_s": per_s("round_trips"),
            "rr_p50_ms": ms_at(self.rr.rtts[before["round_trips"]:after["round_trips"]], 50),
            "rr_p99_ms": ms_at(self.rr.rtts[before["round_trips"]:after["round_trips"]], 99),
            "outbox_per_s": per_s("outbox"),
            "work_completed_per_s": per_s("work"),
            "churn_per_s": per_s("churn"),
            # What was offered, and what is waiting: a backlog that keeps growing is a server falling behind.
            "messages_sent_per_s": per_s("sent"),
            "outbox_emitted_per_s": per_s("emitted"),
            "work_submitted_per_s": per_s("submitted"),
            "work_backlog": after["submitted"] - after["work"],
            "outbox_backlog": after["unpublished"],
            "rss_mib": round(rss_kib(self.server.pid) / 1024, 1),
            "open_fds": open_fds(self.server.pid),
            "errors": after["errors"] - before["errors"],
            "server_cpu": round((after["server_cpu_s"] - before["server_cpu_s"]) / wall, 2) if wall > 0 else 0.0,
            "loadgen_cpu": round((after["own_cpu_s"] - before["own_cpu_s"]) / wall, 2) if wall > 0 else 0.0,
        }

    async def sample(self, t0: float, until: float) -> None:
        """A row per interval (the last one may be shorter), and the server's RSS every few seconds."""
        step = min(5.0, self.args.interval_s / 4)
        before = self.totals()
        boundary = t0 + self.args.interval_s
        while True:
            if not self.server.alive():  # nothing more to read from /proc: the run has failed
                self.errors.add("server died", "".join(list(self.log)[-20:]))
                return
            now = time.monotonic()
            self.rss_samples.append((round(now - t0, 2), round(rss_kib(self.server.pid) / 1024, 2)))
            if now >= min(boundary, until) - 0.01:
                after = self.totals()
                self.rows.append(self.row(t0, before, after))
                print(report.table(self.rows).splitlines()[-1 if len(self.rows) > 1 else 0], flush=True)
                if len(self.rows) == 1:
                    print(report.table(self.rows).splitlines()[1], flush=True)
                if now >= until - 0.01:
                    return
                before, boundary = after, boundary + self.args.interval_s
            await asyncio.sleep(max(0.0, min(step, min(boundary, until) - time.monotonic())))

    async def run(self) -> dict[str, Any]:
        parts: list[Any] = [*self.streams, self.rr, self.outbox, self.work]
        for part in parts:
            await part.open()
        t0 = time.monotonic()
        until = t0 + self.args.minutes * 60
        print(f"traffic for {self.args.minutes} min from {datetime.now(UTC):%H:%M:%S} UTC", flush=True)
        a = self.args
        await asyncio.gather(
            *(s.drive(until) for s in self.streams), self.rr.drive(until), self.churn.drive(until),
            self.outbox.drive(a.outbox_per_s, until), self.work.drive(a.work_per_s, until), self.sample(t0, until),
        )
        drain_until = time.monotonic() + DRAIN_S
        totals: dict[str, Any] = {}
        for stream in self.streams:
            totals[stream.topic] = await stream.finish(drain_until)
        totals["request/reply"] = await self.rr.finish(drain_until)
        totals["outbox"] = await self.outbox.finish(self.db, drain_until)
        totals["work"] = await self.work.finish(drain_until)
        totals["churn"] = {"connections": self.churn.done}
        for part in parts:
            await part.close()
        self.db.close()
        return totals


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic time (warm-ups and drain not counted)")
    parser.add_argument("--interval-s", type=float, default=60.0, help="one row of figures per interval")
    parser.add_argument("--postgres", action="store_true",
                        help="PostgreSQL + Redis (+ RabbitMQ as outbox target when it answers) instead of SQLite")
    parser.add_argument("--messages-per-s", type=float, default=50.0, help="per stream (two streams)")
    parser.add_argument("--consumers", type=int, default=2, help="consumers per stream")
    parser.add_argument("--requests-per-s", type=float, default=10.0, help="request/reply calls")
    parser.add_argument("--outbox-per-s", type=float, default=10.0, help="outbox events emitted")
    parser.add_argument("--work-per-s", type=float, default=10.0, help="work requests submitted")
    parser.add_argument("--workers", type=int, default=4, help="worker sockets")
    parser.add_argument("--churn-per-s", type=float, default=5.0, help="short-lived connections")
    parser.add_argument("--max-rss-slope", type=float, default=verdict.MAX_SLOPE_MIB_PER_MIN,
                        help="MiB/min: the most server RSS may grow after warm-up and still be flat")
    parser.add_argument("--warmup-fraction", type=float, default=verdict.WARMUP_FRACTION,
                        help="the first part of the run that the memory verdict leaves out")
    parser.add_argument("--server-log", choices=tuple(servers.SERVER_LOGS), default="quiet")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.postgres and not databases.postgres_and_redis_reachable():
        print("--postgres needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379", file=sys.stderr)
        return 2
    raise_open_file_limit()
    started = datetime.now(UTC)
    rabbit = args.postgres and databases.reachable("127.0.0.1", 5672)
    outbox_target = "rabbitmq" if rabbit else "topic"
    destination = f"soak.events.{uuid.uuid4().hex[:8]}" if rabbit else "soak-events"
    configuration = (f"PostgreSQL + Redis, outbox -> {'RabbitMQ' if rabbit else 'topic'}" if args.postgres
                     else "SQLite + in-memory layer, outbox -> topic")
    with ExitStack() as stack:
        url = stack.enter_context(databases.fresh_postgres() if args.postgres else databases.fresh_sqlite())
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.soak.provision", str(args.workers),
             *(f"{slug}:{policy}" for slug, policy in TOPICS.items())],
            cwd=servers.ROOT, env=servers.child_env(DATABASE_URL=url), check=True, timeout=180,
            stdout=subprocess.PIPE, text=True)
        provisioned = json.loads(done.stdout.strip().splitlines()[-1])
        server = servers.switchyard(url, "cache", databases.REDIS_URL if args.postgres else None, name="soak",
                                    server_log=args.server_log)
        # Its relays run as in production: a soak is where a ping or garbage collection pass that leaks shows.
        for name in ("PING_INTERVAL_S", "GC_INTERVAL_S"):
            server.env.pop(name)
        server.env.update(SWITCHYARD_LOG_FORMAT="json", OUTBOX_TARGET=outbox_target)
        if rabbit:
            server.env.update(AMQP_URL=AMQP_URL, OUTBOX_AMQP_EXCHANGE=destination)
        log = ServerLog()
        server.output = log
        stack.callback(server.stop)
        server.start()
        soak = Soak(args, server, log, provisioned, url, outbox_target, destination)
        import uvloop

        print(f"soak: {configuration}, server pid {server.pid}, port {server.port}", flush=True)
        totals = uvloop.run(soak.run())
    lost = {name: int(figures["lost"]) + int(figures.get("unpublished", 0)) for name, figures in totals.items()
            if "lost" in figures}
    errors = dict(soak.errors.counts)
    first_errors = dict(soak.errors.first)
    if log.errors:
        errors["server ERROR log lines"] = log.errors
        first_errors["server ERROR log lines"] = str(log.first_error)
    judged = verdict.judge(soak.rss_samples, args.minutes * 60, lost, sum(errors.values()), args.max_rss_slope,
                           args.warmup_fraction)
    result = {
        "started": f"{started:%Y-%m-%d %H:%M} UTC", "configuration": configuration, "minutes": args.minutes,
        "interval_s": args.interval_s, "warmup_fraction": args.warmup_fraction,
        "offered": (f"{args.messages_per_s:g} msg/s x 2 streams ({args.consumers} consumers each), "
                    f"{args.requests_per_s:g} calls/s, {args.outbox_per_s:g} outbox events/s, "
                    f"{args.work_per_s:g} work requests/s ({args.workers} workers), {args.churn_per_s:g} churn conn/s"),
        "intervals": soak.rows, "rss_samples": soak.rss_samples, "totals": totals, "errors": errors,
        "first_errors": first_errors, "server_warnings": log.warnings, "verdict": judged.line(),
        "rss_slope_mib_per_min": judged.rss_slope_mib_per_min, "passed": judged.passed,
    }
    paths = report.write(result, args.out, f"soak-{started:%Y%m%dT%H%M%SZ}")
    print()
    print(report.table(soak.rows))
    for name, figures in totals.items():
        print(f"{name}: {json.dumps(figures)}")
    for kind, count in errors.items():
        print(f"error {kind} x{count}: {first_errors[kind]}")
    print(f"\n{judged.line()}")
    print(f"results: {paths['md']}  {paths['json']}  {paths['png']}")
    return 0 if judged.passed else 1
