"""The speed targets of the durable path (issue "Speed of the durable path"), checked against a run.

Each target names a workload, a configuration and a figure: a ratio to the raw relay of the same run (rates:
at least; latencies: at most), or an absolute figure where the target is one (sockets attached by the
deadline, memory per socket). ``was`` is the figure when the target was set (benchmarks/RESULTS.md, the
project's run of 2026-11-23), so the table shows where each stands and how far it moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks import report


@dataclass(frozen=True)
class Target:
    name: str
    workload: str
    config: str
    path: tuple[str, ...]
    # Exactly one of: the ratio to raw must be at least / at most; the figure itself at least / at most.
    ratio_at_least: float | None = None
    ratio_at_most: float | None = None
    at_least: float | None = None
    at_most: float | None = None
    was: str = ""
    # Sockets the workload must have asked for to count (a quick run's 1,000 say little about 10,000).
    min_requested: int | None = None

    @property
    def wanted(self) -> str:
        if self.ratio_at_least is not None:
            return f">= {self.ratio_at_least:g}x"
        if self.ratio_at_most is not None:
            return f"<= {self.ratio_at_most:g}x"
        if self.at_least is not None:
            return f">= {self.at_least:,g}"
        return f"<= {self.at_most:,g}"


@dataclass(frozen=True)
class Verdict:
    target: Target
    # What this run measured, as the target counts it ("0.41x", "10,000"); None: not measured.
    shown: str | None
    met: bool | None


TARGETS = [
    Target("W1 1->1 disabled, SQLite", "W1", "sqlite-disabled", ("ack_rate",), ratio_at_least=0.9, was="0.75x"),
    Target("W2 1->10 disabled, SQLite", "W2", "sqlite-disabled", ("delivery_rate",), ratio_at_least=0.95,
           was="0.95x"),
    Target("W1 1->1 cache, SQLite", "W1", "sqlite-cache", ("ack_rate",), ratio_at_least=0.6, was="0.32x"),
    Target("W3 request/reply p50 cache, SQLite", "W3", "sqlite-cache", ("rtt_ms", "p50"), ratio_at_most=2,
           was="4.66x"),
    Target("W1 1->1 cache, PostgreSQL + Redis, one process", "W1", "pg-redis-cache-1p", ("ack_rate",),
           ratio_at_least=0.5, was="0.12x"),
    Target("W2 1->10 cache, PostgreSQL + Redis", "W2", "pg-redis-cache-1p", ("delivery_rate",),
           ratio_at_least=0.6, was="0.33x"),
    Target("W3 p50 cache, PostgreSQL + Redis", "W3", "pg-redis-cache-1p", ("rtt_ms", "p50"), ratio_at_most=3,
           was="17.4x"),
    Target("W1 store, SQLite", "W1", "sqlite-store", ("ack_rate",), ratio_at_least=0.4, was="0.11x"),
    Target("W1 store, PostgreSQL + Redis", "W1", "pg-redis-store-1p", ("ack_rate",), ratio_at_least=0.4,
           was="-"),
    Target("W4 consumer attaches by the deadline, cache, PostgreSQL", "W4", "pg-redis-cache-1p",
           ("connections",), at_least=10_000, was="5,000", min_requested=10_000),
    Target("W4 memory per idle consumer socket (KiB), cache, SQLite", "W4", "sqlite-cache", ("rss_per_conn_kib",),
           at_most=16, was="29", min_requested=10_000),
]


def verdict(target: Target, results: dict[str, dict[str, Any]], raw: dict[str, Any]) -> Verdict:
    """``results``: configuration key -> workload -> its result; ``raw``: the raw relay's, by workload."""
    result = results.get(target.config, {}).get(target.workload)
    value = report.value_at(result, target.path)
    if value is None:
        return Verdict(target, None, None)
    requested = report.value_at(result, ("requested",))
    if target.min_requested is not None and (requested or 0) < target.min_requested:
        return Verdict(target, f"{value:,.0f} (of {requested or 0:,.0f} asked: too few to tell)", None)
    if target.ratio_at_least is not None or target.ratio_at_most is not None:
        ratio = report.ratio(value, report.value_at(raw.get(target.workload), target.path))
        if ratio is None:
            return Verdict(target, None, None)
        if target.ratio_at_least is not None:
            return Verdict(target, f"{ratio:.2f}x", ratio >= target.ratio_at_least)
        return Verdict(target, f"{ratio:.2f}x", ratio <= (target.ratio_at_most or 0))
    met = value >= target.at_least if target.at_least is not None else value <= (target.at_most or 0)
    return Verdict(target, f"{value:,.1f}" if value % 1 else f"{value:,.0f}", met)


def table(results: dict[str, dict[str, Any]], raw: dict[str, Any]) -> str:
    """Every target of ``make bench``: the figure when it was set, the target, this run's figure, and
    whether it is met."""
    body = []
    for found in (verdict(t, results, raw) for t in TARGETS):
        met = ("not run" if found.shown is None else "-") if found.met is None else ("yes" if found.met else "NO")
        body.append([found.target.name, found.target.was, found.target.wanted, found.shown or "-", met])
    return render("Targets of the durable path (ratios to the raw relay of this run)", body)


def outbox_table(results: dict[str, Any]) -> str:
    """The outbox relay's targets from a ``make bench-outbox`` run (benchmarks/outbox.py's results): the
    best single-task batch size against raw aio-pika, and commit-to-publish with the relay in process."""
    raw = results["raw_throughput"]["events_per_s"]
    single = {name: row["events_per_s"] for name, row in results["relay_throughput"].items() if "tasks" not in name}
    best = max(single, key=lambda name: single[name])
    ratio = single[best] / raw if raw else 0.0
    latency = results["in_process_latency_ms"]
    body = [
        [f"outbox relay to RabbitMQ with confirms, in order per key ({best})", "0.26x", ">= 0.7x", f"{ratio:.2f}x",
         _met(ratio >= 0.7)],
        ["commit-to-publish p50 ms (relay in process)", "9", "<= 3", f"{latency['p50']}", _met(latency["p50"] <= 3)],
        ["commit-to-publish p99 ms (relay in process)", "-", "<= 20", f"{latency['p99']}", _met(latency["p99"] <= 20)],
    ]
    return render("Targets of the outbox relay (ratio to raw aio-pika of this run)", body)


def _met(met: bool) -> str:
    return "yes" if met else "NO"


def render(title: str, body: list[list[str]]) -> str:
    header = ["target", "was", "target", "this run", "met"]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *map(line, body), ""])
