"""Result tables: one per workload, every figure beside its ratio to the raw relay of the same run.

Ratios are value / raw for every metric (docs/architecture.md section 16): for rates above 1 is
better, for latencies and memory above 1 is worse. The machine may be shared with other jobs, so the ratio,
not the absolute figure, is what compares across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.configs import Config


@dataclass(frozen=True)
class Metric:
    title: str
    path: tuple[str, ...]
    decimals: int = 0


METRICS: dict[str, list[Metric]] = {
    "W1": [Metric("acks/s", ("ack_rate",)), Metric("deliveries/s", ("delivery_rate",)),
           Metric("e2e p50 ms", ("latency_ms", "p50"), 2), Metric("e2e p99 ms", ("latency_ms", "p99"), 2)],
    "W2": [Metric("deliveries/s", ("delivery_rate",)), Metric("acks/s", ("ack_rate",)),
           Metric("e2e p50 ms", ("latency_ms", "p50"), 2), Metric("e2e p99 ms", ("latency_ms", "p99"), 2)],
    "W3": [Metric("rtt p50 ms", ("rtt_ms", "p50"), 3), Metric("rtt p99 ms", ("rtt_ms", "p99"), 3),
           Metric("round trips/s", ("round_trips_per_s",))],
    "W4": [Metric("connects/s", ("connect_rate",)), Metric("settled/s", ("settled_rate",)),
           Metric("KiB/conn", ("rss_per_conn_kib",), 1)],
}

TITLES = {
    "W1": "W1 throughput 1 -> 1",
    "W2": "W2 fan-out 1 -> 10",
    "W3": "W3 request/reply round trip (sequential)",
    "W4": "W4 idle consumer sockets on one server process",
}


def value_at(result: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    node: Any = result
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, int | float) else None


def ratio(value: float | None, raw: float | None) -> float | None:
    if value is None or not raw:
        return None
    return round(value / raw, 2)


def lost_of(result: dict[str, Any] | None) -> int | None:
    if not result or "lost" not in result:
        return None
    return int(result["lost"])


def storing_loss(config: Config, result: dict[str, Any] | None) -> bool:
    return config.storing and bool(lost_of(result))


def notes(config: Config, result: dict[str, Any] | None) -> str:
    if result is None:
        return "not run"
    found: list[str] = []
    if "error" in result:
        found.append(f"ERROR: {result['error']}")
    if storing_loss(config, result):
        found.append(f"!!! LOST {result['lost']} ACKED MESSAGES UNDER '{config.policy}' !!!")
    if result.get("complete") is False:
        found.append("stopped at deadline")
    for key in ("ack_errors", "request_ack_errors", "answer_ack_errors", "duplicates", "failed", "timeouts"):
        if result.get(key):
            found.append(f"{key}={result[key]}")
    for key in ("first_ack_error", "first_failure"):
        if result.get(key):
            found.append(str(result[key])[:80])
    if result.get("settled") is False:
        found.append("server still busy at the end of a settle wait")
    if result.get("closed"):
        found.append(f"closed={result['closed']}")
    if result.get("workload") == "W4" and result.get("complete") is False and result.get("connections"):
        found.append(f"{result['connections']:,} of {result['requested']:,} sockets")
    return "; ".join(found)


def _cell(value: float | None, raw: float | None, decimals: int) -> str:
    if value is None:
        return "-"
    shown = f"{value:,.{decimals}f}"
    r = ratio(value, raw)
    return f"{shown} ({r:.2f}x)" if r is not None else shown


def table(workload: str, rows: list[tuple[Config, dict[str, Any] | None]], detail: str) -> str:
    metrics = METRICS[workload]
    raw_result = next((r for c, r in rows if c.raw), None)
    header = ["config", *(m.title for m in metrics), "lost", "cpu srv/lg", "notes"]
    body: list[list[str]] = []
    for config, result in rows:
        cells = [config.label]
        for metric in metrics:
            cells.append(_cell(value_at(result, metric.path), value_at(raw_result, metric.path), metric.decimals))
        lost = lost_of(result)
        cells.append("-" if lost is None else str(lost))
        cpu = (result or {}).get("server_cpu"), (result or {}).get("loadgen_cpu")
        cells.append(f"{cpu[0]:.2f}/{cpu[1]:.2f}" if None not in cpu else "-")
        cells.append(notes(config, result))
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([f"{TITLES[workload]}  [{detail}]", rule, line(header), rule, *map(line, body), ""])
