"""Reconnect delays: exponential back-off with jitter (Sans-I/O: the caller sleeps)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that double from ``initial_s`` up to ``maximum_s``; each is drawn uniformly from the
    upper half of its step ("equal jitter"), so clients cut off together do not return together, and
    none returns at once in a tight loop."""

    initial_s: float = 0.1
    maximum_s: float = 10.0
    factor: float = 2.0
    attempts: int = 0
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def next_delay(self) -> float:
        step = min(self.maximum_s, self.initial_s * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return step / 2 + self.rand() * step / 2

    def reset(self) -> None:
        """After a connection that worked: the next failure starts from ``initial_s`` again."""
        self.attempts = 0
