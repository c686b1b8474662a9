"""Admin login throttle: after too many failed logins within a window, a username or a client
address may not try again (its password is not even checked) until enough failures age out.

A username counts failures from every address (guessing one account from many machines); an
address counts failures for every username (trying many accounts from one machine), with a higher
limit so one office behind a NAT is not locked out by a few typos. A successful login clears the
username's failures, not the address's: logging into an account of one's own must not buy more
guesses at another.
"""

from __future__ import annotations

import hashlib
import ipaddress
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from app.auth.models import LoginFailure

ADDRESS = "address"
USERNAME = "username"

# An IPv6 client usually holds a whole /64; counting single addresses would give it 2**64 tries.
IPV6_PREFIX_BITS = 64


def wait_s(failures: Sequence[datetime], limit: int, window_s: float, now: datetime) -> float:
    """Seconds until one more attempt may be made after ``failures`` (any order); 0 when it may
    now. It may once fewer than ``limit`` failures lie within the last ``window_s``."""
    recent = sorted(at for at in failures if at > now - timedelta(seconds=window_s))
    if len(recent) < limit:
        return 0.0
    # The attempt opens when the oldest failures have aged out far enough to fall below the limit.
    opens_at = recent[len(recent) - limit] + timedelta(seconds=window_s)
    return max((opens_at - now).total_seconds(), 0.0)


def address_key(address: str) -> str:
    """The client address as counted: IPv6 by its /64, anything unparsable as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; their /64 would be all of IPv4.
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX_BITS}", strict=False))
    return str(ip)


def username_key(username: str) -> str:
    """The username as the login form reads it (stripped, NFKC), case-folded: spelling one name
    differently must not open a fresh count."""
    return unicodedata.normalize("NFKC", username.strip()).casefold()


def _digest(scope: str, value: str) -> str:
    # surrogatepass: whatever string the request decoded to digests rather than raising.
    return hashlib.sha256(f"{scope}:{value}".encode(errors="surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Counter:
    scope: str
    digest: str
    limit: int


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    address: str
    username: str

    @property
    def by_address(self) -> Counter:
        return Counter(ADDRESS, _digest(ADDRESS, address_key(self.address)), settings.LOGIN_ADDRESS_FAILURES_MAX)

    @property
    def by_username(self) -> Counter:
        return Counter(USERNAME, _digest(USERNAME, username_key(self.username)), settings.LOGIN_FAILURES_MAX)


@dataclass(frozen=True, slots=True)
class Admission:
    """An attempt already counted as a failure: ``wait_s`` 0 lets its password be checked;
    otherwise it was refused and its count withdrawn."""

    wait_s: float
    rows: tuple[int, ...]


def _wait_after_others(counter: Counter, own: list[int], now: datetime) -> float:
    window_s = settings.LOGIN_FAILURE_WINDOW_S
    others = LoginFailure.objects.filter(
        scope=counter.scope, digest=counter.digest, at__gt=now - timedelta(seconds=window_s)
    ).exclude(pk__in=own)
    # Only the newest ``limit`` failures matter: the attempt opens when the oldest of them ages out.
    latest = others.order_by("-at").values_list("at", flat=True)[: counter.limit]
    return wait_s(list(latest), counter.limit, window_s, now)


def admit(attempt: LoginAttempt, now: datetime | None = None) -> Admission:
    """Count ``attempt`` as a failure first, then admit it unless the failures besides it reach a
    limit. Counting first means attempts in flight count too: with several server processes,
    simultaneous guesses could otherwise all pass one count before any of them failed.

    Also forgets failures past the window, so the table holds at most one window's failures."""
    now = now or timezone.now()
    LoginFailure.objects.filter(at__lte=now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_S)).delete()
    counters = (attempt.by_address, attempt.by_username)
    own = [LoginFailure.objects.create(scope=c.scope, digest=c.digest, at=now).pk for c in counters]
    wait = max(_wait_after_others(c, own, now) for c in counters)
    if wait > 0:
        # A refused attempt checked no password: it must not prolong the block.
        LoginFailure.objects.filter(pk__in=own).delete()
        return Admission(wait, ())
    return Admission(0.0, tuple(own))


def record_success(attempt: LoginAttempt, admission: Admission) -> None:
    """A successful login clears its username's failures and withdraws its own count from the
    address (whose other failures stay: logging into one's own account buys no guesses)."""
    counter = attempt.by_username
    LoginFailure.objects.filter(scope=counter.scope, digest=counter.digest).delete()
    LoginFailure.objects.filter(pk__in=admission.rows).delete()
