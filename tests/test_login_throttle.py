"""Admin login throttle: the decision (app/auth/login_throttle.py) without HTTP, then through the real
admin login form of a server started with small limits."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from app.auth.login_throttle import LoginAttempt, address_key, admit, record_success, username_key, wait_s
from app.auth.models import LoginFailure
from tests.browser import Browser
from tests.protocol import make_user, set_password, unique
from tests.servers import ServerProcess, start_server

USERNAME_MAX = 3
ADDRESS_MAX = 5
WINDOW_S = 600.0


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.LOGIN_FAILURES_MAX = USERNAME_MAX
    settings.LOGIN_ADDRESS_FAILURES_MAX = ADDRESS_MAX
    settings.LOGIN_FAILURE_WINDOW_S = WINDOW_S


def address() -> str:
    """A client address no other test uses (the session database keeps every test's failures)."""
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2]}"


def ago(now: datetime, *seconds: float) -> list[datetime]:
    return [now - timedelta(seconds=s) for s in seconds]


# --- the decision --------------------------------------------------------------------------------

def test_below_the_limit_may_try_now() -> None:
    """Fewer failures than the limit within the window: no wait."""
    now = timezone.now()
    assert wait_s(ago(now, 10, 20), limit=3, window_s=60, now=now) == 0.0


def test_at_the_limit_waits_until_the_oldest_counted_failure_ages_out() -> None:
    """At the limit the wait ends when the oldest of the newest ``limit`` failures leaves the window."""
    now = timezone.now()
    assert wait_s(ago(now, 5, 50, 20, 55), limit=3, window_s=60, now=now) == pytest.approx(10.0)


def test_failures_outside_the_window_do_not_count() -> None:
    """Failures older than the window are forgotten."""
    now = timezone.now()
    assert wait_s(ago(now, 61, 70, 10), limit=2, window_s=60, now=now) == 0.0


def test_spellings_of_one_username_share_a_count() -> None:
    """Case, surrounding space and Unicode compatibility forms do not open a fresh count."""
    assert username_key(" Admin ") == username_key("ADMIN") == username_key("\uff41dmin") == "admin"


def test_ipv6_addresses_of_one_prefix_share_a_count() -> None:
    """An IPv6 client is counted by its /64; IPv4 addresses (also IPv4-mapped ones) one by one."""
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("192.0.2.1") != address_key("192.0.2.2")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"


def fail(attempt: LoginAttempt, now: datetime) -> None:
    """An admitted attempt whose password was wrong (it stays counted)."""
    assert admit(attempt, now).wait_s == 0.0


def test_failures_block_the_username_from_every_address() -> None:
    """``LOGIN_FAILURES_MAX`` failures of one username block it from any other address too."""
    name, now = unique("victim"), timezone.now()
    for _ in range(USERNAME_MAX):
        fail(LoginAttempt(address(), name), now)
    assert admit(LoginAttempt(address(), name), now).wait_s == pytest.approx(WINDOW_S)


def test_failures_block_the_address_for_every_username() -> None:
    """``LOGIN_ADDRESS_FAILURES_MAX`` failures from one address block it for any username, not other addresses."""
    client, now = address(), timezone.now()
    for _ in range(ADDRESS_MAX):
        fail(LoginAttempt(client, unique("guess")), now)
    assert admit(LoginAttempt(client, unique("other")), now).wait_s == pytest.approx(WINDOW_S)
    assert admit(LoginAttempt(address(), unique("other")), now).wait_s == 0.0


def test_attempts_in_flight_count() -> None:
    """Attempts admitted but not yet settled count: simultaneous guesses cannot all pass one count."""
    attempt, now = LoginAttempt(address(), unique("raced")), timezone.now()
    admitted = [admit(attempt, now).wait_s == 0.0 for _ in range(USERNAME_MAX + 3)]
    assert admitted == [True] * USERNAME_MAX + [False] * 3


def test_refused_attempts_do_not_prolong_the_block() -> None:
    """A refused attempt is not counted, so hammering a blocked username does not extend its block."""
    attempt, now = LoginAttempt(address(), unique("victim")), timezone.now()
    for _ in range(USERNAME_MAX):
        fail(attempt, now)
    for _ in range(USERNAME_MAX):
        assert admit(attempt, now + timedelta(seconds=WINDOW_S / 2)).wait_s == pytest.approx(WINDOW_S / 2)
    assert admit(attempt, now + timedelta(seconds=WINDOW_S)).wait_s == 0.0


def test_the_block_ends_when_the_window_passes() -> None:
    """A blocked username waits until its failures are older than the window, then may try again."""
    attempt, now = LoginAttempt(address(), unique("victim")), timezone.now()
    for _ in range(USERNAME_MAX):
        fail(attempt, now)
    assert admit(attempt, now + timedelta(seconds=WINDOW_S - 1)).wait_s == pytest.approx(1.0)
    assert admit(attempt, now + timedelta(seconds=WINDOW_S)).wait_s == 0.0


def test_success_clears_the_username_not_the_address() -> None:
    """A successful login forgets its username's failures; the address keeps its earlier ones."""
    attempt, now = LoginAttempt(address(), unique("typo")), timezone.now()
    for _ in range(USERNAME_MAX - 1):
        fail(attempt, now)
    record_success(attempt, admit(attempt, now))
    assert LoginFailure.objects.filter(digest=attempt.by_username.digest).count() == 0
    assert LoginFailure.objects.filter(digest=attempt.by_address.digest).count() == USERNAME_MAX - 1


def test_failures_past_the_window_are_pruned() -> None:
    """Each attempt deletes every failure older than the window: the table stays one window deep."""
    old, now = LoginAttempt(address(), unique("old")), timezone.now()
    fail(old, now - timedelta(seconds=WINDOW_S + 1))
    fail(LoginAttempt(address(), unique("new")), now)
    assert not LoginFailure.objects.filter(digest=old.by_username.digest).exists()


# --- through a real server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def throttled_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server with small login limits, on the session database."""
    proc = start_server(os.environ["DATABASE_URL"], LOGIN_FAILURES_MAX=str(USERNAME_MAX),
                        LOGIN_ADDRESS_FAILURES_MAX=str(ADDRESS_MAX), LOGIN_FAILURE_WINDOW_S=str(WINDOW_S))
    yield proc
    proc.stop()


def staff(password: str) -> str:
    user = make_user(is_staff=True, is_superuser=True)
    set_password(user, password)
    return str(user.username)


def browser_at(server: ServerProcess, client: str) -> Browser:
    """A browser whose address the server sees as ``client`` (uvicorn trusts X-Forwarded-For from 127.0.0.1)."""
    return Browser(server.http, headers={"X-Forwarded-For": client})


def test_wrong_passwords_until_429_then_even_the_right_one(throttled_server: ServerProcess) -> None:
    """After ``LOGIN_FAILURES_MAX`` wrong passwords the login answers 429 (JSON, Retry-After), also to
    the right password, and does not log in."""
    name = staff("right-password")
    browser = browser_at(throttled_server, address())
    assert [browser.admin_login(name, "wrong").status for _ in range(USERNAME_MAX)] == [200] * USERNAME_MAX
    refused = browser.admin_login(name, "wrong")
    assert refused.status == 429 and "too many failed logins" in refused.json()["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= WINDOW_S
    assert browser.admin_login(name, "right-password").status == 429
    assert browser.request("/admin/").status == 302  # still not logged in: sent to the login page


def test_blocked_username_is_blocked_from_other_addresses(throttled_server: ServerProcess) -> None:
    """A username blocked after failures from one address is blocked from every other address."""
    name = staff("right-password")
    first = browser_at(throttled_server, address())
    for _ in range(USERNAME_MAX):
        first.admin_login(name, "wrong")
    assert browser_at(throttled_server, address()).admin_login(name, "right-password").status == 429


def test_other_usernames_from_the_address_log_in(throttled_server: ServerProcess) -> None:
    """Blocking one username leaves other users logging in from the same address (below its own limit)."""
    client, other = address(), staff("other-password")
    victim = staff("right-password")
    for _ in range(USERNAME_MAX):
        browser_at(throttled_server, client).admin_login(victim, "wrong")
    assert browser_at(throttled_server, client).admin_login(other, "other-password").status == 302


def test_address_limit_blocks_every_username_there_only(throttled_server: ServerProcess) -> None:
    """``LOGIN_ADDRESS_FAILURES_MAX`` failures over many usernames block that address, not others."""
    client, name = address(), staff("right-password")
    for _ in range(ADDRESS_MAX):
        assert browser_at(throttled_server, client).admin_login(unique("guess"), "wrong").status == 200
    assert browser_at(throttled_server, client).admin_login(name, "right-password").status == 429
    assert browser_at(throttled_server, address()).admin_login(name, "right-password").status == 302


def test_success_clears_the_usernames_count(throttled_server: ServerProcess) -> None:
    """A successful login resets the username's failures, so later typos start from zero."""
    name = staff("right-password")
    browser = browser_at(throttled_server, address())
    for _ in range(USERNAME_MAX - 1):
        browser.admin_login(name, "wrong")
    assert browser.admin_login(name, "right-password").status == 302
    retry = browser_at(throttled_server, address())
    for _ in range(USERNAME_MAX - 1):
        assert retry.admin_login(name, "wrong").status == 200
    assert retry.admin_login(name, "right-password").status == 302


def test_simultaneous_guesses_across_processes_stay_within_the_limit(throttled_server: ServerProcess) -> None:
    """Wrong passwords posted all at once to two server processes get at most ``LOGIN_FAILURES_MAX``
    password checks; the rest are 429."""
    name = staff("right-password")
    other = start_server(os.environ["DATABASE_URL"], LOGIN_FAILURES_MAX=str(USERNAME_MAX),
                         LOGIN_ADDRESS_FAILURES_MAX=str(ADDRESS_MAX), LOGIN_FAILURE_WINDOW_S=str(WINDOW_S))
    try:
        browsers = [browser_at(server, address()) for server in (throttled_server, other) for _ in range(6)]
        for browser in browsers:
            browser.open_login()
        with ThreadPoolExecutor(len(browsers)) as pool:
            statuses = sorted(pool.map(lambda b: b.post_login(name, "wrong").status, browsers))
    finally:
        other.stop()
    assert statuses.count(200) <= USERNAME_MAX and set(statuses) <= {200, 429}, statuses
