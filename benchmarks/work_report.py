"""The work benchmark's tables: per database, each Switchyard figure beside its ratio to the raw queue's
figure for the same number of workers in the same run (value / raw: rates above 1x are better,
latencies above 1x are worse)."""

from __future__ import annotations

from typing import Any

from benchmarks.report import ratio, value_at

Row = dict[str, Any]  # a load generator's results for one number of workers: {"backlog": ..., "push": ..., ...}

THROUGHPUT = [
    ("backlog assigned/s", ("backlog", "assigned_per_s"), 0),
    ("backlog completed/s", ("backlog", "completed_per_s"), 0),
    ("push submitted/s", ("push", "submitted_per_s"), 0),
    ("push assigned/s", ("push", "assigned_per_s"), 0),
    ("push completed/s", ("push", "completed_per_s"), 0),
]
LATENCY = [
    ("start p50 ms", ("latency", "start_ms", "p50"), 2),
    ("start p99 ms", ("latency", "start_ms", "p99"), 2),
    ("POST p50 ms", ("latency", "post_rtt_ms", "p50"), 2),
    ("cycle p50 ms", ("latency", "cycle_ms", "p50"), 2),
    ("cycle p99 ms", ("latency", "cycle_ms", "p99"), 2),
]
SYSTEM_LABELS = {"raw": "raw queue", "switchyard": "switchyard"}


def cell(value: float | None, base: float | None, decimals: int, with_ratio: bool) -> str:
    if value is None:
        return "-"
    shown = f"{value:,.{decimals}f}"
    factor = ratio(value, base) if with_ratio else None
    return f"{shown} ({factor:.2f}x)" if factor is not None else shown


def notes(row: Row | None) -> str:
    if row is None:
        return "not run"
    found: list[str] = []
    if "error" in row:
        found.append(f"ERROR: {str(row['error'])[:100]}")
    for phase in ("backlog", "push", "latency"):
        result = row.get(phase)
        if not isinstance(result, dict):
            continue
        if result.get("stalled"):
            found.append(f"{phase}: STALLED at {result['assigned']} of {result['requests']} assigned")
        elif result.get("complete") is False:
            done = result.get("completed", result.get("measured"))
            found.append(f"{phase}: {done} of {result['requests']} by the deadline")
        if result.get("submit_failures"):
            found.append(f"{phase}: HTTP {sorted(set(result['submit_failures']))}")
    if row.get("error_frames"):
        found.append(f"{row['error_frames']} error frames: {str(row.get('first_error_frame'))[:80]}")
    return "; ".join(found)


def broken(row: Row) -> bool:
    """A failed run, a refused submission, an ``error`` frame or a stall: more than slowness."""
    phases = [row.get(phase) for phase in ("backlog", "push", "latency")]
    return "error" in row or bool(row.get("error_frames")) or any(
        isinstance(result, dict) and (result.get("stalled") or result.get("submit_failures")) for result in phases
    )


def cpu(row: Row | None, phase: str) -> str:
    result = (row or {}).get(phase) or {}
    if result.get("server_cpu") is None:
        return "-"
    return f"{result['server_cpu']:.2f}/{result['loadgen_cpu']:.2f}"


def table(title: str, metrics: list[tuple[str, tuple[str, ...], int]], results: dict[str, dict[str, Row]],
          workers: list[int], cpu_phase: str | None = None) -> str:
    """``results``: system ("raw", "switchyard") -> number of workers (as a string) -> that row."""
    header = ["workers", "system", *(m[0] for m in metrics), *(["cpu srv/lg"] if cpu_phase else []), "notes"]
    body: list[list[str]] = []
    for count in workers:
        raw = results.get("raw", {}).get(str(count))
        for system, label in SYSTEM_LABELS.items():
            if system not in results:
                continue
            row = results[system].get(str(count))
            cells = [str(count), label]
            for _, path, decimals in metrics:
                cells.append(cell(value_at(row, path), value_at(raw, path), decimals, system != "raw"))
            if cpu_phase:
                cells.append(cpu(row, cpu_phase))
            cells.append(notes(row))
            body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (1, len(cells) - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *map(line, body), ""])
