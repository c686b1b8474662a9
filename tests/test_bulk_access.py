"""Whom a bulk's operations (/api/v1/_bulk/) run as, on a real server: the bulk's caller (token, admin session
past its CSRF check, or anonymous) with no more rights than directly, credentials checked again for each
operation, never a caller an operation names itself."""

from __future__ import annotations

from app.auth.models import Token
from app.broker.models import Topic
from tests.api_client import BULK, call, create, statuses
from tests.browser import Browser
from tests.protocol import key_with, make_token, make_user, unique
from tests.servers import ServerProcess


# Rights and identity
def test_unprivileged_caller_cannot_do_in_a_bulk_what_they_cannot_do_directly(server: ServerProcess) -> None:
    """A caller without broker.add_topic gets 403 for a create inside a bulk too, and nothing is created."""
    _, key = key_with()
    name = unique("norights")
    assert call(server, "/topics", "POST", key, {"name": name})[0] == 403
    status, results = call(server, BULK, "PUT", key, [create(name)])
    assert (status, statuses(results)) == (200, [403])
    assert not Topic.objects.filter(slug=name).exists()


def test_operation_cannot_name_another_caller(server: ServerProcess) -> None:
    """An operation's own Authorization header (a superuser's key) is refused: it runs as the bulk's caller."""
    _, key = key_with()
    other = make_token(make_user(is_superuser=True, is_staff=True))
    name = unique("escalate")
    status, results = call(server, BULK, "PUT", key, [create(name, headers={"Authorization": f"Token {other}"})])
    assert (status, statuses(results)) == (200, [422])
    assert "Authorization is not allowed" in results[0]["info"]
    assert not Topic.objects.filter(slug=name).exists()


def test_anonymous_bulk_runs_as_anonymous(server: ServerProcess) -> None:
    """Without credentials the operations are anonymous: a create is 401."""
    name = unique("anon")
    status, results = call(server, BULK, "PUT", None, [create(name)])
    assert (status, statuses(results)) == (200, [401])
    assert not Topic.objects.filter(slug=name).exists()


def test_token_disabled_by_an_earlier_operation_stops_the_later_ones(server: ServerProcess) -> None:
    """Credentials are checked for each operation: once the bulk's token is disabled, the next operation is 401."""
    user, key = key_with()
    token = Token.objects.get(user=user)
    status, results = call(server, BULK, "PUT", key, [
        {"method": "post", "path": ["tokens", token.pk, "disable"]},
        {"method": "get", "path": "tokens"},
    ])
    assert (status, statuses(results)) == (200, [200, 401])


# Admin session
def test_session_bulk_without_csrf_token_is_refused(admin_browser: Browser) -> None:
    """A session-authenticated bulk is a write: without the CSRF token it is 403 and runs nothing."""
    name = unique("csrf")
    answer = admin_browser.send_json(f"/api/v1{BULK}", value=[create(name)], headers={"Origin": admin_browser.base})
    assert answer.status == 403
    assert answer.json()["detail"].startswith("CSRF check failed")
    assert not Topic.objects.filter(slug=name).exists()


def test_session_bulk_with_csrf_token_runs_as_the_session_user(admin_browser: Browser) -> None:
    """With the CSRF token checked once, the operations run as the session's user (no token of their own)."""
    name = unique("csrf")
    answer = admin_browser.send_json(f"/api/v1{BULK}", value=[create(name)], headers=admin_browser.csrf_headers())
    assert answer.status == 200, answer.body
    assert statuses(answer.json()) == [201]
    assert Topic.objects.filter(slug=name).exists()
