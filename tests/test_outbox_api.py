"""The outbox over HTTP (list, inspect, emit, retry, delete, stats) on a real server, and its admin."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from app.outbox.emit import configured_targets, emit
from app.outbox.models import OutboxEvent, Status
from tests.outbox import clear_outbox
from tests.protocol import auth, make_token, make_topic, make_user, unique
from tests.servers import ServerProcess

API = "/api/v1"


@pytest.fixture(autouse=True)
def _empty_outbox() -> Iterator[None]:
    clear_outbox()
    yield


def call(server: ServerProcess, path: str, method: str = "GET", key: str | None = None,
         body: Any = None) -> tuple[int, Any]:
    """``test_status_api.call`` with a JSON body, and None for an empty answer (204)."""
    headers = {**(auth(key) if key else {}), **({"Content-Type": "application/json"} if body is not None else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.http + API + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def superuser_key() -> str:
    return make_token(make_user(is_superuser=True, is_staff=True))


def key_with(*codenames: str) -> str:
    """A token of a user granted these ``outbox`` model permissions and nothing else."""
    user = make_user()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="outbox", codename__in=codenames))
    return make_token(user)


def event(status: Status = Status.PENDING, **fields: Any) -> OutboxEvent:
    """An event emitted in this process, then put in ``status`` directly (no relay runs)."""
    fields.setdefault("type", "com.example.thing")
    fields.setdefault("source", "/tests/outbox-api")
    row = emit(fields.pop("type"), fields.pop("source"), fields.pop("data", {"n": 1}), target="topic", **fields)
    if status != Status.PENDING:
        attempts = 3 if status in (Status.FAILED, Status.RETRY) else 1
        OutboxEvent.objects.filter(pk=row.pk).update(status=status, attempts=attempts, last_error="refused")
    row.refresh_from_db()
    return row


# Every outbox endpoint, acting on event {pk} where it takes one.
ENDPOINTS = [
    pytest.param("GET", "/outbox/events", None, id="list"),
    pytest.param("GET", "/outbox/events/{pk}", None, id="get"),
    pytest.param("POST", "/outbox/events/{pk}/retry", None, id="retry"),
    pytest.param("POST", "/outbox/dead-letters/retry", None, id="retry-dead-letters"),
    pytest.param("DELETE", "/outbox/events/{pk}", None, id="delete"),
    pytest.param("POST", "/outbox/events", {"type": "com.example.denied", "source": "/tests"}, id="emit"),
    pytest.param("GET", "/outbox/stats", None, id="stats"),
]


# Authentication and permissions
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_anonymous_is_401(server: ServerProcess, method: str, path: str, body: Any) -> None:
    """Every outbox endpoint answers 401 without credentials and changes nothing."""
    row = event(Status.FAILED)
    assert call(server, path.format(pk=row.pk), method, body=body)[0] == 401
    assert OutboxEvent.objects.get().status == Status.FAILED


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_user_without_permission_is_403(server: ServerProcess, method: str, path: str, body: Any) -> None:
    """Every outbox endpoint answers 403 to a user holding no outbox permission and changes nothing."""
    row = event(Status.FAILED)
    status, answer = call(server, path.format(pk=row.pk), method, make_token(make_user()), body)
    assert status == 403 and "outbox." in answer["detail"]
    assert OutboxEvent.objects.get().status == Status.FAILED


def test_unknown_token_is_401(server: ServerProcess) -> None:
    """A token that matches no user authenticates nobody: 401."""
    assert call(server, "/outbox/events", key="no-such-key")[0] == 401


def test_view_permission_does_not_allow_emitting(server: ServerProcess) -> None:
    """``view_outboxevent`` lists events but emitting needs ``add_outboxevent`` (403)."""
    key = key_with("view_outboxevent")
    assert call(server, "/outbox/events", key=key)[0] == 200
    assert call(server, "/outbox/events", "POST", key, {"type": "t", "source": "/s"})[0] == 403


# Listing
def test_granted_user_lists_oldest_first(server: ServerProcess) -> None:
    """A user granted ``view_outboxevent`` lists every event, oldest first."""
    pks = [event().pk, event(Status.FAILED).pk, event(Status.PUBLISHED).pk]
    status, page = call(server, "/outbox/events", key=key_with("view_outboxevent"))
    assert status == 200
    assert [item["pk"] for item in page["items"]] == pks
    assert (page["next_cursor"], page["next"]) == (None, None)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("status", "failed", [1, 3]), ("key", "k-b", [2, 3]), ("type", "com.example.other", [4])],
)
def test_list_filters(server: ServerProcess, name: str, value: str, expected: list[int]) -> None:
    """The list keeps only events of the given status, key or type."""
    rows = [
        event(Status.FAILED, key="k-a"),
        event(key="k-b"),
        event(Status.FAILED, key="k-b"),
        event(type="com.example.other"),
    ]
    status, page = call(server, f"/outbox/events?{name}={value}", key=superuser_key())
    assert status == 200
    assert [item["pk"] for item in page["items"]] == [rows[n - 1].pk for n in expected]


def walk(server: ServerProcess, key: str, path: str) -> list[list[int]]:
    """The pks of every page, following ``next`` from ``path`` until it is null."""
    pages: list[list[int]] = []
    url: str | None = path
    while url is not None:
        status, page = call(server, url.removeprefix(API), key=key)
        assert status == 200, page
        pages.append([item["pk"] for item in page["items"]])
        assert (page["next_cursor"] is None) == (page["next"] is None)
        url = page["next"]
    return pages


def test_list_pages_with_cursor_and_limit(server: ServerProcess) -> None:
    """Following next reaches every event once; a last page that is exactly full has no next."""
    pks = [event().pk for _ in range(4)]
    assert walk(server, superuser_key(), "/outbox/events?limit=2") == [pks[0:2], pks[2:4]]


def test_list_walk_keeps_filters_and_after(server: ServerProcess) -> None:
    """after= starts the walk past a pk, and each next keeps the filters."""
    rows = [event(Status.FAILED if n % 2 else Status.PENDING) for n in range(7)]
    failed = [row.pk for row in rows if row.status == Status.FAILED]
    pages = walk(server, superuser_key(), f"/outbox/events?status=failed&after={rows[1].pk}&limit=1")
    assert pages == [[pk] for pk in failed[1:]]


def test_list_refuses_another_lists_cursor(server: ServerProcess) -> None:
    """A cursor of another list is a 422."""
    make_token(make_user())
    key = superuser_key()
    status, tokens = call(server, "/tokens?limit=1", key=key)
    assert status == 200 and tokens["next_cursor"] is not None
    assert call(server, f"/outbox/events?cursor={tokens['next_cursor']}", key=key)[0] == 422


# One event
def test_get_event_returns_attributes_and_json_data(server: ServerProcess) -> None:
    """GET one event gives its CloudEvents attributes, delivery state and JSON data as JSON."""
    row = event(type="com.example.order", source="/orders", data={"id": 7, "tags": ["a", None]},
                subject="order-7", key="order-7", extensions={"tenant": "acme", "shard": 3}, id="evt-1")
    status, body = call(server, f"/outbox/events/{row.pk}", key=key_with("view_outboxevent"))
    assert status == 200
    assert {k: body[k] for k in ("pk", "id", "specversion", "type", "source", "subject", "key", "target")} == {
        "pk": row.pk, "id": "evt-1", "specversion": "1.0", "type": "com.example.order", "source": "/orders",
        "subject": "order-7", "key": "order-7", "target": "topic",
    }
    assert body["datacontenttype"] == "application/json" and body["extensions"] == {"tenant": "acme", "shard": 3}
    assert body["data"] == {"id": 7, "tags": ["a", None]} and body["data_base64"] is None
    assert (body["status"], body["attempts"], body["published_at"]) == ("pending", 0, None)


def test_get_event_returns_binary_data_as_base64(server: ServerProcess) -> None:
    """Binary data comes back as data_base64, with data left null."""
    row = event(data=b"\x00\x01\xfe\xff")
    status, body = call(server, f"/outbox/events/{row.pk}", key=superuser_key())
    assert status == 200
    assert body["datacontenttype"] == "application/octet-stream" and body["data"] is None
    assert base64.b64decode(body["data_base64"]) == b"\x00\x01\xfe\xff"


def test_get_event_returns_text_data_as_text(server: ServerProcess) -> None:
    """Data of a text/* type comes back as a string."""
    row = event(data="h\u00e9llo", datacontenttype="text/plain; charset=utf-8")
    body = call(server, f"/outbox/events/{row.pk}", key=superuser_key())[1]
    assert (body["data"], body["data_base64"]) == ("h\u00e9llo", None)


def test_get_event_with_non_json_bytes_under_json_type(server: ServerProcess) -> None:
    """A row whose JSON-typed data is not JSON (written around emit) comes back as data_base64, not a 500."""
    row = event(data=b"\xffnot json", datacontenttype="application/octet-stream")
    OutboxEvent.objects.filter(pk=row.pk).update(datacontenttype="application/json")
    status, body = call(server, f"/outbox/events/{row.pk}", key=superuser_key())
    assert status == 200 and base64.b64decode(body["data_base64"]) == b"\xffnot json" and body["data"] is None
    assert call(server, "/outbox/events", key=superuser_key())[0] == 200


def test_get_unknown_event_is_404(server: ServerProcess) -> None:
    """GET of a pk that does not exist is a 404 with a reason."""
    status, body = call(server, "/outbox/events/999999999", key=superuser_key())
    assert status == 404 and "does not exist" in body["detail"]


# Emitting
def test_emit_to_a_topic_needs_the_right_to_publish_there(server: ServerProcess) -> None:
    """Emitting for a topic the caller may not publish to is refused (403), nothing stored."""
    slug = make_topic(public=False, anonymous=False)
    body = {"type": "t", "source": "/tests/emit", "target": "topic", "destination": slug}
    status, answer = call(server, "/outbox/events", "POST", key_with("add_outboxevent"), body)
    assert status == 403 and slug in answer["detail"]
    assert not OutboxEvent.objects.exists()


def test_emit_with_a_chosen_stream_needs_change_permission(server: ServerProcess) -> None:
    """Choosing a RabbitMQ routing key or Redis stream over HTTP needs outbox.change_outboxevent."""
    body = {"type": "t", "source": "/tests/emit", "target": "redis", "destination": "someone.elses.stream"}
    status, answer = call(server, "/outbox/events", "POST", key_with("add_outboxevent"), body)
    assert status == 403 and "change_outboxevent" in answer["detail"]


def test_emit_creates_a_pending_event(server: ServerProcess) -> None:
    """POST emits (201): the row exists, pending, on the server's default target."""
    user = make_user()
    user.user_permissions.add(Permission.objects.get(content_type__app_label="outbox", codename="add_outboxevent"))
    slug = make_topic(public=False, anonymous=False, producers=(user,))
    body = {"type": "com.example.created", "source": "/tests/emit", "data": {"n": 1}, "key": "k1",
            "destination": slug}
    status, answer = call(server, "/outbox/events", "POST", make_token(user), body)
    assert status == 201 and answer["status"] == "pending" and answer["data"] == {"n": 1}
    row = OutboxEvent.objects.get(pk=answer["pk"])
    # The server inherits this process's environment, so both compute the same default target.
    assert (row.type, row.key, row.event_id, row.target) == ("com.example.created", "k1", answer["id"],
                                                             settings.OUTBOX_TARGET)
    assert json.loads(bytes(row.data)) == {"n": 1} and row.status == Status.PENDING


def test_emit_binary_data_base64(server: ServerProcess) -> None:
    """data_base64 is stored as the decoded bytes."""
    body = {"type": "t.bin", "source": "/tests/emit", "data_base64": base64.b64encode(b"\x00\xff").decode()}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 201
    row = OutboxEvent.objects.get(pk=answer["pk"])
    assert bytes(row.data) == b"\x00\xff" and row.datacontenttype == "application/octet-stream"


def test_emit_invalid_extension_is_422_naming_the_field(server: ServerProcess) -> None:
    """An invalid event is refused with 422 naming the field, and nothing is stored."""
    body = {"type": "t", "source": "/tests/emit", "extensions": {"Bad-Name": 1}}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "extensions" in answer["detail"] and "Bad-Name" in answer["detail"]
    assert not OutboxEvent.objects.exists()


def test_emit_data_and_data_base64_is_422(server: ServerProcess) -> None:
    """Giving both data and data_base64 is refused with 422."""
    body = {"type": "t", "source": "/tests/emit", "data": {"n": 1}, "data_base64": "AAE="}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "data_base64" in answer["detail"]
    assert not OutboxEvent.objects.exists()


def test_emit_data_base64_not_json_under_json_type_is_422(server: ServerProcess) -> None:
    """data_base64 declared as JSON by datacontenttype must be JSON (422, nothing stored)."""
    body = {"type": "t", "source": "/tests/emit", "datacontenttype": "application/json",
            "data_base64": base64.b64encode(b"\xffnot json").decode()}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "not JSON" in answer["detail"]
    assert not OutboxEvent.objects.exists()


def test_emit_bad_base64_is_422(server: ServerProcess) -> None:
    """data_base64 that is not base64 is refused with 422."""
    body = {"type": "t", "source": "/tests/emit", "data_base64": "not base64!"}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "base64" in answer["detail"]


def test_emit_non_ascii_base64_is_422(server: ServerProcess) -> None:
    """data_base64 with a character outside ASCII is refused with 422, not a 500."""
    body = {"type": "t", "source": "/tests/emit", "data_base64": "\u00e5AAA"}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "base64" in answer["detail"]


def test_emit_time_with_a_large_offset_is_kept_as_its_instant(server: ServerProcess) -> None:
    """A time whose offset PostgreSQL cannot store (+20:49) is taken as the UTC instant it names."""
    body = {"type": "t", "source": "/tests/emit", "id": unique("evt"), "time": "2025-01-01T20:49:00+20:49"}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 201, answer
    assert OutboxEvent.objects.get(pk=answer["pk"]).time == datetime(2025, 1, 1, tzinfo=UTC)


def test_emit_time_outside_the_calendar_in_utc_is_422(server: ServerProcess) -> None:
    """A time whose UTC falls before year 1 is refused with 422."""
    body = {"type": "t", "source": "/tests/emit", "time": "0001-01-01T00:00:00+01:00"}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422, answer


def test_emit_duplicate_source_and_id_is_409(server: ServerProcess) -> None:
    """Emitting a source + id pair a second time is a 409; the first event stays alone."""
    key = superuser_key()
    body = {"type": "t", "source": "/tests/emit", "id": unique("evt")}
    assert call(server, "/outbox/events", "POST", key, body)[0] == 201
    status, answer = call(server, "/outbox/events", "POST", key, {**body, "type": "t.again"})
    assert status == 409 and body["id"] in answer["detail"]
    assert list(OutboxEvent.objects.values_list("type", flat=True)) == ["t"]


def test_emit_to_unconfigured_target_is_422(server: ServerProcess) -> None:
    """A target the server has no connection for is refused with 422."""
    missing = sorted({"rabbitmq", "redis"} - configured_targets())
    if not missing:
        pytest.skip("AMQP_URL and a Redis URL are both set: every target is configured")
    body = {"type": "t", "source": "/tests/emit", "target": missing[0]}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "not configured" in answer["detail"]
    assert not OutboxEvent.objects.exists()


# Retrying and deleting
def test_retry_failed_event(server: ServerProcess) -> None:
    """Retrying a failed event (200) puts it back to pending with no attempts counted."""
    row = event(Status.FAILED)
    status, answer = call(server, f"/outbox/events/{row.pk}/retry", "POST", key_with("change_outboxevent"))
    assert status == 200 and (answer["status"], answer["attempts"]) == ("pending", 0)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.PENDING, 0)


@pytest.mark.parametrize("state", [Status.PENDING, Status.PUBLISHED])
def test_retry_unsettled_or_published_is_409(server: ServerProcess, state: Status) -> None:
    """A pending or published event cannot be retried (409) and is left as it was."""
    row = event(state)
    assert call(server, f"/outbox/events/{row.pk}/retry", "POST", superuser_key())[0] == 409
    assert OutboxEvent.objects.get(pk=row.pk).status == state


def test_retry_unknown_event_is_404(server: ServerProcess) -> None:
    """Retrying a pk that does not exist is a 404."""
    assert call(server, "/outbox/events/999999999/retry", "POST", superuser_key())[0] == 404


def test_retry_dead_letters_retries_every_failed_event(server: ServerProcess) -> None:
    """Retrying dead letters requeues every failed event, and only those; returns the count."""
    failed = [event(Status.FAILED).pk for _ in range(3)]
    others = {event(state).pk: state for state in (Status.PENDING, Status.RETRY, Status.PUBLISHED)}
    status, answer = call(server, "/outbox/dead-letters/retry", "POST", key_with("change_outboxevent"))
    assert status == 200 and answer == {"retried": 3}
    assert set(OutboxEvent.objects.filter(pk__in=failed).values_list("status", flat=True)) == {Status.PENDING}
    assert dict(OutboxEvent.objects.exclude(pk__in=failed).values_list("pk", "status")) == others


@pytest.mark.parametrize("name", ["type", "key"])
def test_retry_dead_letters_of_a_type_or_key(server: ServerProcess, name: str) -> None:
    """With ?type= or ?key=, only the failed events that match are retried."""
    chosen = [event(Status.FAILED, type="t.chosen", key="k-chosen").pk for _ in range(2)]
    other = event(Status.FAILED, type="t.other", key="k-other").pk
    value = "t.chosen" if name == "type" else "k-chosen"
    status, answer = call(server, f"/outbox/dead-letters/retry?{name}={value}", "POST", superuser_key())
    assert status == 200 and answer == {"retried": 2}
    assert set(OutboxEvent.objects.filter(pk__in=chosen).values_list("status", flat=True)) == {Status.PENDING}
    assert OutboxEvent.objects.get(pk=other).status == Status.FAILED


def test_delete_failed_event(server: ServerProcess) -> None:
    """Deleting a dead letter answers 204 and removes the row."""
    row = event(Status.FAILED)
    assert call(server, f"/outbox/events/{row.pk}", "DELETE", key_with("delete_outboxevent")) == (204, None)
    assert not OutboxEvent.objects.filter(pk=row.pk).exists()


def test_delete_pending_event_is_409(server: ServerProcess) -> None:
    """A pending event cannot be deleted (409) and stays."""
    row = event()
    status, answer = call(server, f"/outbox/events/{row.pk}", "DELETE", superuser_key())
    assert status == 409 and "pending" in answer["detail"]
    assert OutboxEvent.objects.filter(pk=row.pk).exists()


def test_delete_unknown_event_is_404(server: ServerProcess) -> None:
    """Deleting a pk that does not exist is a 404."""
    assert call(server, "/outbox/events/999999999", "DELETE", superuser_key())[0] == 404


# Figures and schema
def test_stats_counts_per_status_and_lag(server: ServerProcess) -> None:
    """Stats count events per status; lag_s is the age of the oldest unpublished event."""
    old = event()
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(seconds=120))
    for state in (Status.PENDING, Status.FAILED, Status.FAILED, Status.PUBLISHED, Status.RETRY, Status.PROCESSING):
        event(state)
    status, body = call(server, "/outbox/stats", key=key_with("view_outboxevent"))
    assert status == 200
    lag = body.pop("lag_s")
    assert body == {"pending": 2, "processing": 1, "published": 1, "retry": 1, "failed": 2}
    assert 120 <= lag < 180


def test_stats_lag_is_zero_when_all_published(server: ServerProcess) -> None:
    """With nothing unpublished the lag is 0."""
    event(Status.PUBLISHED)
    assert call(server, "/outbox/stats", key=superuser_key())[1]["lag_s"] == 0


def test_openapi_lists_outbox_paths(server: ServerProcess) -> None:
    """The OpenAPI schema documents every outbox path and method."""
    status, schema = call(server, "/openapi.json")
    assert status == 200
    paths = {path: set(ops) for path, ops in schema["paths"].items() if "/outbox/" in path}
    assert paths == {
        f"{API}/outbox/events": {"get", "post"},
        f"{API}/outbox/events/{{pk}}": {"get", "delete"},
        f"{API}/outbox/events/{{pk}}/retry": {"post"},
        f"{API}/outbox/dead-letters/retry": {"post"},
        f"{API}/outbox/stats": {"get"},
    }


# Admin (in-process Django test client on the session database)
def admin_client() -> Client:
    client = Client()
    client.force_login(make_user(is_superuser=True, is_staff=True))
    return client


def test_admin_changelist_filters_by_status() -> None:
    """A superuser sees the changelist with a status filter that keeps only that status."""
    failed, _pending = event(Status.FAILED), event()
    url = reverse("admin:outbox_outboxevent_changelist")
    client = admin_client()
    page = client.get(url)
    assert page.status_code == 200
    assert b"By status" in page.content and b"?status__exact=failed" in page.content
    filtered = client.get(url, {"status__exact": "failed"})
    assert filtered.status_code == 200
    assert list(filtered.context["cl"].result_list) == [failed]


def test_admin_retry_action_requeues_failed_events() -> None:
    """The retry_events action puts the selected failed events back to pending."""
    chosen = [event(Status.FAILED), event(Status.FAILED)]
    untouched = event(Status.FAILED)
    response = admin_client().post(
        reverse("admin:outbox_outboxevent_changelist"),
        {"action": "retry_events", "_selected_action": [row.pk for row in chosen], "index": 0},
        follow=True,
    )
    assert response.status_code == 200 and b"2 event(s) queued again." in response.content
    assert {OutboxEvent.objects.get(pk=row.pk).status for row in chosen} == {Status.PENDING}
    assert OutboxEvent.objects.get(pk=untouched.pk).status == Status.FAILED
