"""Percentiles and rates for workload results (plain floats, JSON-friendly)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50 / p99 / max / mean in milliseconds of latencies given in seconds."""
    if not seconds:
        return {"count": 0, "p50": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] * 1000, 3)

    return {"count": len(ordered), "p50": at(50), "p99": at(99), "max": round(ordered[-1] * 1000, 3),
            "mean": round(sum(ordered) / len(ordered) * 1000, 3)}


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0
