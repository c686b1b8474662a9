"""What one side of a run did (Sans-I/O: times are passed in, seconds on one monotonic clock).

A tally counts the messages one side completed (acked to a producer, received by a consumer), their
bytes, its errors by kind and their latencies, in total and per interval: the runner closes an
interval every second (``tick``) for the live line and the per-second series.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from switchyard_client.perf.histogram import Histogram

MIB = 1024 * 1024


@dataclass(frozen=True)
class Interval:
    """One closed interval of a tally: ``seconds`` long, ending ``at_s`` after the run started."""

    at_s: float
    seconds: float
    messages: int
    bytes: int
    errors: int
    p50_us: int | None
    p99_us: int | None
    max_us: int | None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_rate(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "t_s": round(self.at_s, 3), "seconds": round(self.seconds, 3), "messages": self.messages,
            "msg_per_s": round(self.rate, 1), "mib_per_s": round(self.mib_rate, 3), "errors": self.errors,
            "p50_ms": _ms(self.p50_us), "p99_ms": _ms(self.p99_us), "max_ms": _ms(self.max_us),
        }


class Tally:
    """Counts of one side of a run that started at clock time ``start``. Its rates are measured from
    ``start``, or with ``from_first`` from its first message on (a consumer started before its
    producers waits for them without lowering its rate)."""

    def __init__(self, start: float, *, from_first: bool = False) -> None:
        self.start = start
        self.from_first = from_first
        self.first_at: float | None = None
        self.attempted = 0
        self.messages = 0
        self.bytes = 0
        # Messages without a latency (a consumer's without a ``perf_sent_ns`` property).
        self.untimed = 0
        self.errors: Counter[str] = Counter()
        self.latency = Histogram()
        self.series: list[Interval] = []
        self.last_at: float | None = None
        self._interval = Histogram()
        self._interval_start = start
        self._interval_messages = 0
        self._interval_bytes = 0
        self._interval_errors = 0

    def done(self, nbytes: int, latency_us: int | None, now: float) -> None:
        """One message completed at ``now``, ``latency_us`` after it left (None: unknown)."""
        self.messages += 1
        self.bytes += nbytes
        self._interval_messages += 1
        self._interval_bytes += nbytes
        self.last_at = now
        if self.first_at is None:
            self.first_at = now
        if latency_us is None:
            self.untimed += 1
        else:
            self._interval.record(latency_us)

    def error(self, kind: str) -> None:
        """One message failed: ``kind`` is the broker's result (``send-error:8``), ``timeout``, ..."""
        self.errors[kind] += 1
        self._interval_errors += 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def tick(self, now: float) -> Interval:
        """Close the interval running since the last tick; its latencies join the total."""
        interval = Interval(
            at_s=now - self.start, seconds=now - self._interval_start, messages=self._interval_messages,
            bytes=self._interval_bytes, errors=self._interval_errors, p50_us=self._interval.percentile(50),
            p99_us=self._interval.percentile(99), max_us=self._interval.max,
        )
        self.latency.merge(self._interval)
        self.series.append(interval)
        self._interval = Histogram()
        self._interval_start = now
        self._interval_messages = self._interval_bytes = self._interval_errors = 0
        return interval

    def close(self, now: float) -> None:
        """End the run at ``now``: the last, partial interval joins the series when it holds anything."""
        if self._interval_messages or self._interval_errors or now - self._interval_start >= 0.5:
            self.tick(now)
        else:
            self.latency.merge(self._interval)
            self._interval = Histogram()

    def elapsed(self, now: float) -> float:
        """The measured time: from the start (or the first message) to the last message completed
        (``now`` if none was)."""
        end = self.last_at if self.last_at is not None else now
        begin = self.first_at if self.from_first and self.first_at is not None and self.messages > 1 else self.start
        return max(0.0, end - begin)

    def rate(self, now: float) -> float:
        seconds = self.elapsed(now)
        return self.messages / seconds if seconds > 0 else 0.0

    def mib_rate(self, now: float) -> float:
        seconds = self.elapsed(now)
        return self.bytes / MIB / seconds if seconds > 0 else 0.0


def _ms(us: int | None) -> float | None:
    return None if us is None else round(us / 1000, 3)
