"""Who may open a websocket now: connection-rate limits and open-connection limits per client
address and per principal (no I/O; the caller passes the time).

Token buckets: each key may open ``burst`` connections at once and ``rate_per_s`` more every
second, and hold at most ``max_per_*`` open. Connections that are not (yet) authenticated count
against their client address, those with valid credentials against their principal, so
anonymous churn from one address cannot lock out an authenticated client, nor one principal
another. Failed credential lookups (a bad token, a stale session) count against the address in a
bucket of their own: each costs a database query.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus

# Keys remembered per bucket family; the least recently used are forgotten (a forgotten key starts
# with a full bucket again, which only ever errs towards admitting).
MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """A handshake answered with an HTTP status and a reason instead of a websocket."""

    status: HTTPStatus
    reason: str


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1.0)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
            bucket.at = now
        return bucket

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key``; False when it has none left (refuse the connection)."""
        if not self.enabled:
            return True
        bucket = self._bucket(key, now)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def exhausted(self, key: str, now: float) -> bool:
        """Whether ``key`` has no token left, without taking one."""
        return self.enabled and self._bucket(key, now).tokens < 1.0


@dataclass(slots=True)
class Admission:
    """The limits a websocket handshake goes through: connection rates, and how many connections
    one address (unauthenticated) or one principal may hold open at once (0: no limit)."""

    per_address: RateLimiter
    per_principal: RateLimiter
    failed_lookups: RateLimiter
    max_per_address: int = 0
    max_per_principal: int = 0
    held: Counter[str] = field(default_factory=Counter)

    def anonymous(self, address: str, now: float) -> str | None:
        """Admit an unauthenticated connection from ``address``: the key to release when it ends,
        or None when refused."""
        return self._admit(f"address:{address}", self.max_per_address, self.per_address, address, now)

    def authenticated(self, principal: str, now: float) -> str | None:
        return self._admit(f"principal:{principal}", self.max_per_principal, self.per_principal, principal, now)

    def _admit(self, key: str, most: int, limiter: RateLimiter, who: str, now: float) -> str | None:
        if most and self.held[key] >= most:
            return None
        if not limiter.allow(who, now):
            return None
        self.held[key] += 1
        return key

    def release(self, key: str) -> None:
        """A connection admitted under ``key`` has ended."""
        self.held[key] -= 1
        if self.held[key] <= 0:
            del self.held[key]

    def may_look_up(self, address: str, now: float) -> bool:
        """A credential not in the cache may be looked up unless this address keeps failing."""
        return not self.failed_lookups.exhausted(address, now)

    def lookup_failed(self, address: str, now: float) -> None:
        self.failed_lookups.allow(address, now)
