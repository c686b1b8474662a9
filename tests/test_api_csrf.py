"""CSRF on the HTTP API: writes authenticated by an admin session need Django's CSRF check (token and
same origin); token-authenticated writes and reads do not. Sessions come from the real admin login."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from app.broker.models import Message, Topic
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from tests.browser import Browser
from tests.outbox import clear_outbox
from tests.protocol import auth, make_token, make_topic, make_user, unique
from tests.servers import ServerProcess

API = "/api/v1"
FOREIGN = "http://evil.example"
UNSAFE = ("post", "put", "patch", "delete")


def emit_body(slug: str) -> dict[str, Any]:
    return {"type": "com.example.csrf", "source": f"/tests/{unique('csrf')}", "target": "topic", "destination": slug}


def failed_event(slug: str) -> OutboxEvent:
    row = emit("com.example.csrf", "/tests/csrf", {"n": 1}, target="topic", destination=slug)
    OutboxEvent.objects.filter(pk=row.pk).update(status=Status.FAILED, attempts=3, last_error="refused")
    row.refresh_from_db()
    return row


def csrf_refused(answer: Any) -> bool:
    return answer.status == 403 and answer.json()["detail"].startswith("CSRF check failed")


def test_session_write_without_token_is_403(admin_browser: Browser) -> None:
    """A session-authenticated emit without a CSRF token is refused with a JSON reason and emits nothing."""
    body = emit_body(make_topic())
    answer = admin_browser.send_json(f"{API}/outbox/events", value=body, headers={"Origin": admin_browser.base})
    assert csrf_refused(answer)
    assert not OutboxEvent.objects.filter(source=body["source"]).exists()


def test_session_write_from_foreign_origin_is_403(admin_browser: Browser) -> None:
    """A session-authenticated emit from another origin is refused even with the right token."""
    body = emit_body(make_topic())
    headers = {**admin_browser.csrf_headers(), "Origin": FOREIGN}
    assert csrf_refused(admin_browser.send_json(f"{API}/outbox/events", value=body, headers=headers))
    assert not OutboxEvent.objects.filter(source=body["source"]).exists()


def test_session_write_with_token_from_same_origin_succeeds(admin_browser: Browser) -> None:
    """A session-authenticated emit with the CSRF token from the server's own origin is accepted."""
    body = emit_body(make_topic())
    answer = admin_browser.send_json(f"{API}/outbox/events", value=body, headers=admin_browser.csrf_headers())
    assert answer.status == 201, answer.body
    assert OutboxEvent.objects.filter(source=body["source"]).exists()


def test_token_write_needs_no_csrf(server: ServerProcess) -> None:
    """A token-authenticated emit needs no CSRF token, whatever its Origin."""
    body = emit_body(make_topic())
    key = make_token(make_user(is_superuser=True, is_staff=True))
    headers = {**auth(key), "Origin": FOREIGN}
    answer = Browser(server.http).send_json(f"{API}/outbox/events", value=body, headers=headers)
    assert answer.status == 201, answer.body


def test_token_wins_over_session(admin_browser: Browser) -> None:
    """With an Authorization header the session is ignored, so no CSRF token is needed (nor used)."""
    key = make_token(make_user(is_superuser=True, is_staff=True))
    answer = admin_browser.send_json(f"{API}/outbox/events", value=emit_body(make_topic()),
                                     headers={**auth(key), "Origin": FOREIGN})
    assert answer.status == 201, answer.body


def test_session_reads_need_no_csrf(admin_browser: Browser) -> None:
    """Safe methods pass with a session and no CSRF token, from any origin."""
    slug = make_topic(public=False, anonymous=False)
    assert admin_browser.request(f"{API}/outbox/stats", headers={"Origin": FOREIGN}).status == 200
    assert admin_browser.request(f"{API}/topics/{slug}/status", headers={"Origin": FOREIGN}).status == 503


def test_anonymous_write_needs_no_csrf(server: ServerProcess) -> None:
    """Without a session or token there is no ambient authority to forge: anonymous pings still work."""
    answer = Browser(server.http).request(f"{API}/topics/{make_topic()}/ping", "POST", headers={"Origin": FOREIGN})
    assert answer.status == 202


def test_every_unsafe_operation_needs_csrf(server: ServerProcess, admin_browser: Browser) -> None:
    """Every unsafe operation in the server's OpenAPI schema refuses a session write without a token
    and changes nothing (the worker endpoints, whose security is a worker's token alone, take no
    session at all: 401)."""
    clear_outbox()
    slug = make_topic()
    target = make_user()
    failed = failed_event(slug)
    stored = Message.objects.create(topic=Topic.objects.get(slug=slug), sequence=1, producer_principal="anonymous",
                                    frame="{}", publish_time=timezone.now())
    paths = admin_browser.request(f"{API}/openapi.json").json()["paths"]
    unsafe = [(method, path) for path, ops in paths.items() for method in ops if method in UNSAFE]
    worker_only = {(method, path) for path, ops in paths.items() for method, op in ops.items()
                   if op.get("security") == [{"WorkerKey": []}]}
    assert ("post", f"{API}/worker/work-requests/next") in worker_only
    assert {("post", f"{API}/topics/{{slug}}/ping"), ("put", f"{API}/topics/{{slug}}/grants/{{username}}"),
            ("post", f"{API}/outbox/events"), ("post", f"{API}/outbox/dead-letters/retry")} <= set(unsafe)
    for method, path in unsafe:
        url = path.format(slug=slug, pk=failed.pk, username=target.username, message_id=stored.message_id)
        answer = admin_browser.send_json(url, method.upper(), {"can_consume": True},
                                         headers={"Origin": admin_browser.base})
        if (method, path) in worker_only:
            assert answer.status == 401, (method, path, answer.status, answer.body)
        else:
            assert csrf_refused(answer), (method, path, answer.status, answer.body)
    failed.refresh_from_db()
    assert failed.status == Status.FAILED and OutboxEvent.objects.count() == 1
    assert Topic.objects.get(slug=slug).last_ping is None
    assert list(Message.objects.filter(topic__slug=slug)) == [stored]
    assert not target.has_perm("broker.can_consume", Topic.objects.get(slug=slug))

