"""What a run prints and writes (Sans-I/O: text and JSON from tallies).

The live line (stderr, each second) and the summary (stdout) are for people; the result file
(``--json``) is for scripts and for comparing runs: the configuration, every side's totals, rates,
errors, percentiles, histogram buckets and per-second series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from switchyard_client.perf.histogram import TABLE_PERCENTILES
from switchyard_client.perf.tally import MIB, Interval, Tally

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Side:
    """One side of a run as reported: ``name`` says what its messages did ("produced", "received"),
    ``latency`` what its latencies measure ("send -> ack")."""

    name: str
    latency: str
    tally: Tally


def live_line(intervals: list[tuple[Side, Interval]]) -> str:
    """``produced 12,345 msg/s  12.1 MiB/s  latency ms p50 1.2 p99 4.5 max 9.8``: every side's rate,
    then the last side's throughput and latencies (the one a run is about), and errors if any."""
    parts = [f"{side.name} {interval.rate:,.0f} msg/s" for side, interval in intervals]
    _, last = intervals[-1]
    parts.append(f"{last.mib_rate:,.1f} MiB/s")
    if last.p50_us is None:
        parts.append("latency ms -")
    else:
        parts.append(f"latency ms p50 {_ms(last.p50_us)} p99 {_ms(last.p99_us)} max {_ms(last.max_us)}")
    errors = sum(interval.errors for _, interval in intervals)
    if errors:
        parts.append(f"errors {errors:,}")
    return "  ".join(parts)


def summary(title: str, sides: list[Side], now: float, *, missing: int | None = None,
            unsettled: int = 0, interrupted: bool = False) -> str:
    """The text printed at the end: totals and rates per side, errors, and a percentile table per
    side that has latencies."""
    lines = [title + ("  (interrupted)" if interrupted else "")]
    for side in sides:
        tally = side.tally
        lines.append(
            f"{side.name:<10} {tally.messages:>12,} msg {tally.bytes / MIB:>10,.2f} MiB in {tally.elapsed(now):,.2f} s"
            f"  {tally.rate(now):>12,.1f} msg/s {tally.mib_rate(now):>9,.2f} MiB/s"
        )
    if missing is not None:
        lines.append(f"{'missing':<10} {missing:>12,} msg (acked, not received by the end)")
    if unsettled:
        lines.append(f"{'unsettled':<10} {unsettled:>12,} msg (no ack or error by the end)")
    errors = {f"{side.name} {kind}": n for side in sides for kind, n in sorted(side.tally.errors.items())}
    lines.append(f"{'errors':<10} " + (", ".join(f"{kind} {n:,}" for kind, n in errors.items()) or "none"))
    for side in sides:
        histogram = side.tally.latency
        if not histogram.count:
            continue
        lines.append("")
        lines.append(f"latency {side.latency} ({side.name}), ms:")
        lines.append(histogram.table())
    return "\n".join(lines)


def side_json(side: Side, now: float) -> dict[str, Any]:
    tally = side.tally
    histogram = tally.latency
    return {
        "attempted": tally.attempted, "messages": tally.messages, "bytes": tally.bytes, "untimed": tally.untimed,
        "elapsed_s": round(tally.elapsed(now), 3), "msg_per_s": round(tally.rate(now), 1),
        "mib_per_s": round(tally.mib_rate(now), 3), "errors": dict(sorted(tally.errors.items())),
        "latency": {
            "what": side.latency, "count": histogram.count, "min_ms": _ms_json(histogram.min),
            "mean_ms": None if histogram.mean is None else round(histogram.mean / 1000, 3),
            "max_ms": _ms_json(histogram.max),
            "percentiles_ms": {_label(p): _ms_json(histogram.percentile(p)) for p in TABLE_PERCENTILES},
            "relative_error": histogram.relative_error,
            "histogram_us": histogram.to_json(),
        },
        "series": [interval.to_json() for interval in tally.series],
    }


def result_json(mode: str, config: dict[str, Any], sides: list[Side], now: float, *, started_at: str,
                exit_code: int, interrupted: bool, error: str | None = None, missing: int | None = None,
                unsettled: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = {
        "format": FORMAT_VERSION, "mode": mode, "config": config, "started_at": started_at,
        "exit_code": exit_code, "interrupted": interrupted, "error": error, "unsettled": unsettled,
    }
    if missing is not None:
        result["missing"] = missing
    result.update({side.name: side_json(side, now) for side in sides})
    return result


def public_url(url: str) -> str:
    """``url`` without credentials or query (a token in it is not written to a result file)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _label(p: float) -> str:
    return "max" if p >= 100 else f"p{p:g}"


def _ms(us: int | None) -> str:
    if us is None:
        return "-"
    ms = us / 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def _ms_json(us: int | None) -> float | None:
    return None if us is None else round(us / 1000, 3)
