"""An HDR-style latency histogram: log-linear buckets in fixed memory with a bounded relative error.

Values are integers (the harness records microseconds). As in HdrHistogram, each power-of-two range
is split into ``sub_bucket_count / 2`` equal sub-buckets, ``sub_bucket_count`` being the power of two
that keeps ``significant_digits``: with 2 digits a value is known to within 1/128 (0.8 %) of itself,
and values below ``sub_bucket_count`` exactly. Memory depends only on the range, not on how many
values were recorded: about 3,200 counters for 1 us .. 1 h at 2 digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# The rows of the percentile table, as HdrHistogram users read them.
TABLE_PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0)
# One hour in microseconds: a latency beyond it is recorded as one hour (and counted as saturated).
HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class Bucket:
    """Recorded values from ``lowest`` to ``highest`` (inclusive), ``count`` of them."""

    lowest: int
    highest: int
    count: int


class Histogram:
    """Counts of integer values from 0 to ``highest``; ``percentile``, ``min``, ``max`` and ``mean``
    read them back. ``min``, ``max`` and ``mean`` are exact; a percentile is the highest value of the
    bucket holding the nearest-rank value, at most ``relative_error`` above it."""

    def __init__(self, highest: int = HOUR_US, significant_digits: int = 2) -> None:
        if not 1 <= significant_digits <= 5:
            raise ValueError("significant_digits: 1 to 5")
        if highest < 2:
            raise ValueError("highest: at least 2")
        self.highest = highest
        self.significant_digits = significant_digits
        largest_exact = 2 * 10**significant_digits
        self._half_magnitude = max(0, math.ceil(math.log2(largest_exact)) - 1)
        self._half_count = 1 << self._half_magnitude
        self._sub_count = 2 * self._half_count
        self._mask = self._sub_count - 1
        buckets = 1
        while (self._sub_count << (buckets - 1)) <= highest:
            buckets += 1
        self._counts = [0] * ((buckets + 1) * self._half_count)
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        # Values above ``highest`` (recorded as ``highest``) and below 0 (recorded as 0).
        self.saturated = 0

    @property
    def counters(self) -> int:
        """The histogram's size: how many counters it holds, however many values it recorded."""
        return len(self._counts)

    @property
    def relative_error(self) -> float:
        """How far above the value it stands for a percentile may be, as a fraction of that value."""
        return 1 / self._half_count

    def record(self, value: int, count: int = 1) -> None:
        """Record ``value`` ``count`` times; values outside 0..highest are clamped and counted."""
        if value < 0 or value > self.highest:
            self.saturated += count
            value = min(max(value, 0), self.highest)
        self._counts[self._index(value)] += count
        self.count += count
        self.total += value * count
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s values (same range and digits) to this histogram."""
        if (other.highest, other.significant_digits) != (self.highest, self.significant_digits):
            raise ValueError("merge: histograms of another range or precision")
        for index, n in enumerate(other._counts):
            if n:
                self._counts[index] += n
        self.count += other.count
        self.total += other.total
        self.saturated += other.saturated
        for bound in (other.min, other.max):
            if bound is not None:
                self.min = bound if self.min is None else min(self.min, bound)
                self.max = bound if self.max is None else max(self.max, bound)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def percentile(self, p: float) -> int | None:
        """The value at percentile ``p`` (0..100, nearest rank); None when nothing was recorded. 100 is
        the exact maximum; 0 the exact minimum."""
        if not 0 <= p <= 100:
            raise ValueError("percentile: 0 to 100")
        if not self.count:
            return None
        if p >= 100:
            return self.max
        rank = max(1, math.ceil(round(p * self.count / 100, 9)))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                # The bucket's top, but never beyond what was recorded.
                assert self.max is not None and self.min is not None
                return max(self.min, min(self._highest_of(index), self.max))
        return self.max  # pragma: no cover - counts sum to count

    def count_at_or_below(self, value: int) -> int:
        """How many recorded values are in buckets no higher than ``value``'s."""
        last = self._index(min(max(value, 0), self.highest))
        return sum(self._counts[: last + 1])

    def buckets(self) -> Iterator[Bucket]:
        """The buckets that hold values, lowest first."""
        for index, n in enumerate(self._counts):
            if n:
                yield Bucket(self._lowest_of(index), self._highest_of(index), n)

    def to_json(self) -> dict[str, Any]:
        """The histogram as JSON: its shape, exact figures and ``[lowest, highest, count]`` per bucket."""
        return {
            "highest": self.highest, "significant_digits": self.significant_digits, "count": self.count,
            "total": self.total, "min": self.min, "max": self.max, "saturated": self.saturated,
            "buckets": [[b.lowest, b.highest, b.count] for b in self.buckets()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """A histogram from ``to_json``'s output (to merge the results of several runs)."""
        histogram = cls(int(data["highest"]), int(data["significant_digits"]))
        for lowest, _highest, n in data["buckets"]:
            histogram._counts[histogram._index(int(lowest))] += int(n)
        histogram.count = int(data["count"])
        histogram.total = int(data["total"])
        histogram.min = data["min"]
        histogram.max = data["max"]
        histogram.saturated = int(data.get("saturated", 0))
        return histogram

    def table(self, *, scale: float = 1000.0, unit: str = "ms",
              percentiles: Iterable[float] = TABLE_PERCENTILES) -> str:
        """HdrHistogram's percentile distribution, one row per percentile: the value (divided by
        ``scale``: microseconds to milliseconds by default), the count at or below it, 1/(1-p)."""
        rows = [f"{'percentile':>12} {'value ' + unit:>12} {'count':>12} {'1/(1-p)':>10}"]
        for p in percentiles:
            value = self.percentile(p)
            if value is None:
                continue
            inverse = "inf" if p >= 100 else f"{1 / (1 - p / 100):,.2f}"
            rows.append(f"{p:>12.3f} {value / scale:>12.3f} {self.count_at_or_below(value):>12,} {inverse:>10}")
        if self.count:
            rows.append(f"{'':>12} mean {(self.mean or 0) / scale:,.3f}  min {(self.min or 0) / scale:,.3f}  "
                        f"max {(self.max or 0) / scale:,.3f}  count {self.count:,}")
        return "\n".join(rows)

    def _index(self, value: int) -> int:
        bucket = (value | self._mask).bit_length() - (self._half_magnitude + 1)
        sub = value >> bucket
        return ((bucket + 1) << self._half_magnitude) + (sub - self._half_count)

    def _position(self, index: int) -> tuple[int, int]:
        bucket = (index >> self._half_magnitude) - 1
        sub = (index & (self._half_count - 1)) + self._half_count
        if bucket < 0:
            sub -= self._half_count
            bucket = 0
        return bucket, sub

    def _lowest_of(self, index: int) -> int:
        bucket, sub = self._position(index)
        return sub << bucket

    def _highest_of(self, index: int) -> int:
        bucket, _ = self._position(index)
        return self._lowest_of(index) + (1 << bucket) - 1
