"""Connection-rate limits as plain decisions (app/broker/admission.py), no sockets."""

from __future__ import annotations

from app.broker.admission import Admission, RateLimiter


def limits(rate: float = 1.0, burst: float = 3.0) -> Admission:
    return Admission(RateLimiter(rate, burst), RateLimiter(rate, burst), RateLimiter(rate, burst))


def test_burst_then_refused():
    """An address may open ``burst`` connections at once, then none until tokens refill."""
    admission = limits()
    assert [bool(admission.anonymous("10.0.0.1", 0.0)) for _ in range(4)] == [True, True, True, False]


def test_refills_at_rate():
    """One token comes back per 1/rate seconds."""
    admission = limits(rate=2.0)
    for _ in range(3):
        admission.anonymous("a", 0.0)
    assert not admission.anonymous("a", 0.4)
    assert admission.anonymous("a", 0.6)


def test_addresses_are_independent():
    """One address's churn does not use up another's tokens."""
    admission = limits()
    for _ in range(5):
        admission.anonymous("a", 0.0)
    assert admission.anonymous("b", 0.0)


def test_principal_unaffected_by_anonymous_churn():
    """Authenticated connections count against their principal, not the address they share."""
    admission = limits()
    for _ in range(10):
        admission.anonymous("127.0.0.1", 0.0)
    assert admission.authenticated("user:1", 0.0)


def test_failed_lookups_block_further_lookups():
    """An address whose credential lookups keep failing may not look up more for a while."""
    admission = limits(burst=2.0)
    assert admission.may_look_up("a", 0.0)
    admission.lookup_failed("a", 0.0)
    admission.lookup_failed("a", 0.0)
    assert not admission.may_look_up("a", 0.0)
    assert admission.may_look_up("a", 1.5)


def test_rate_zero_disables():
    """A rate of 0 turns a limit off."""
    limiter = RateLimiter(0.0, 1.0)
    assert all(limiter.allow("a", 0.0) for _ in range(1000))
    assert not limiter.exhausted("a", 0.0)


def test_keys_are_bounded(monkeypatch):
    """The least recently used keys are forgotten beyond MAX_KEYS (they start full again)."""
    from app.broker import admission

    monkeypatch.setattr(admission, "MAX_KEYS", 2)
    limiter = RateLimiter(1.0, 1.0)
    assert limiter.allow("a", 0.0)
    limiter.allow("b", 0.0)
    limiter.allow("c", 0.0)
    assert limiter.allow("a", 0.0)  # forgotten, so full again
    assert len(limiter._buckets) == 2


def test_open_connections_bounded_per_address():
    """An address may hold ``max_per_address`` connections; one more is admitted after a release."""
    admission = Admission(RateLimiter(0, 1), RateLimiter(0, 1), RateLimiter(0, 1), max_per_address=2)
    first, second = admission.anonymous("a", 0.0), admission.anonymous("a", 0.0)
    assert first and second and admission.anonymous("a", 0.0) is None
    assert admission.anonymous("b", 0.0) is not None
    admission.release(first)
    assert admission.anonymous("a", 0.0) is not None


def test_open_connections_bounded_per_principal():
    """A principal may hold ``max_per_principal`` connections, whatever its address."""
    admission = Admission(RateLimiter(0, 1), RateLimiter(0, 1), RateLimiter(0, 1), max_per_principal=1)
    assert admission.authenticated("user:1", 0.0) is not None
    assert admission.authenticated("user:1", 0.0) is None
    assert admission.authenticated("user:2", 0.0) is not None
