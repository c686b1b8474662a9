"""Pacing a load (Sans-I/O: the caller reads the clock and sleeps).

The n-th message of a run is due at ``start + n / rate``, computed from the start each time rather
than by adding intervals, so the schedule does not drift with rounding or with a sleep that overslept:
a sender that woke late finds the next messages already due and catches up. One that fell further
behind than ``max_lag_s`` (the broker or the sender stalled) starts a new schedule from now instead of
sending the backlog as one burst.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RateLimiter:
    """``rate`` messages a second from ``start`` (a clock reading in seconds); 0: as fast as possible."""

    rate: float
    start: float
    max_lag_s: float = 1.0
    # Slots handed out since ``start``.
    issued: int = 0
    # How many times the schedule started again after falling behind.
    restarts: int = 0

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError("rate: 0 (as fast as possible) or more messages a second")

    def reserve(self, now: float) -> float:
        """Take the next slot; returns the clock time it is due at (``now`` or earlier: send at once)."""
        if self.rate == 0:
            return now
        due = self.start + self.issued / self.rate
        if now - due > self.max_lag_s:
            self.start, self.issued, due = now, 0, now
            self.restarts += 1
        self.issued += 1
        return due


@dataclass
class Countdown:
    """At most ``total`` messages over all senders of a run; 0: no limit."""

    total: int
    taken: int = 0

    def take(self) -> bool:
        """Whether one more may go (and count it)."""
        if self.total and self.taken >= self.total:
            return False
        self.taken += 1
        return True

    @property
    def exhausted(self) -> bool:
        return bool(self.total) and self.taken >= self.total
