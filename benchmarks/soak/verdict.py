"""The soak's verdict: server memory flat after warm-up, nothing lost, no errors.

Memory is flat when the least-squares slope of the server's RSS, sampled every few seconds, over the
run's last two thirds (the first third is warm-up: caches, pools and the allocator's arenas fill) is at
most ``max_slope_mib_per_min``. A slope rather than first-against-last: one sample taken during a burst
would decide the latter. A leak of the default 1 MiB/min is 60 MiB an hour, and visible in 10 minutes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WARMUP_FRACTION = 1 / 3
MAX_SLOPE_MIB_PER_MIN = 1.0


def slope_per_min(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` samples, in value per minute; None under two
    samples or when they all share one instant."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread * 60


def after_warmup(samples: Sequence[tuple[float, float]], run_s: float,
                 fraction: float = WARMUP_FRACTION) -> list[tuple[float, float]]:
    """The samples taken after the first ``fraction`` of a run of ``run_s`` seconds (times from its start)."""
    return [(t, v) for t, v in samples if t >= run_s * fraction]


@dataclass(frozen=True)
class Verdict:
    rss_slope_mib_per_min: float | None
    max_slope_mib_per_min: float
    lost: Mapping[str, int]
    errors: int

    @property
    def memory_flat(self) -> bool:
        # No slope (a run too short for two samples after warm-up) proves nothing: not flat.
        return self.rss_slope_mib_per_min is not None and self.rss_slope_mib_per_min <= self.max_slope_mib_per_min

    @property
    def passed(self) -> bool:
        return self.memory_flat and not any(self.lost.values()) and self.errors == 0

    def line(self) -> str:
        slope = "n/a" if self.rss_slope_mib_per_min is None else f"{self.rss_slope_mib_per_min:+.2f}"
        lost = ", ".join(f"{name} {count}" for name, count in self.lost.items())
        return (f"{'PASS' if self.passed else 'FAIL'}: memory {'flat' if self.memory_flat else 'NOT flat'} "
                f"(RSS slope after warm-up {slope} MiB/min, limit {self.max_slope_mib_per_min:g}); "
                f"lost: {lost}; errors: {self.errors}")


def judge(rss_mib: Sequence[tuple[float, float]], run_s: float, lost: Mapping[str, int], errors: int,
          max_slope_mib_per_min: float = MAX_SLOPE_MIB_PER_MIN, warmup_fraction: float = WARMUP_FRACTION) -> Verdict:
    """``rss_mib``: (seconds from the start of the traffic, RSS in MiB) samples over a run of ``run_s``."""
    slope = slope_per_min(after_warmup(rss_mib, run_s, warmup_fraction))
    return Verdict(None if slope is None else round(slope, 3), max_slope_mib_per_min, dict(lost), errors)
