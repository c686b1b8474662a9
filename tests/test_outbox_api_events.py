"""Reading the outbox over HTTP (/api/v1/outbox/, on a real server): the event list (filters, cursor pages),
one event with its data as JSON, text or base64, and the figures (counts per status, lag)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from app.outbox.models import OutboxEvent, Status
from tests.api_client import API, call
from tests.outbox import event, outbox_key
from tests.protocol import make_token, make_user, superuser_key
from tests.servers import ServerProcess

pytestmark = pytest.mark.usefixtures("empty_outbox")


# Listing
def test_granted_user_lists_oldest_first(server: ServerProcess) -> None:
    """A user granted ``view_outboxevent`` lists every event, oldest first."""
    pks = [event().pk, event(Status.FAILED).pk, event(Status.PUBLISHED).pk]
    status, page = call(server, "/outbox/events", key=outbox_key("view_outboxevent"))
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
    status, body = call(server, f"/outbox/events/{row.pk}", key=outbox_key("view_outboxevent"))
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


# Figures
def test_stats_counts_per_status_and_lag(server: ServerProcess) -> None:
    """Stats count events per status; lag_s is the age of the oldest unpublished event."""
    old = event()
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(seconds=120))
    for state in (Status.PENDING, Status.FAILED, Status.FAILED, Status.PUBLISHED, Status.RETRY, Status.PROCESSING):
        event(state)
    status, body = call(server, "/outbox/stats", key=outbox_key("view_outboxevent"))
    assert status == 200
    lag = body.pop("lag_s")
    assert body == {"pending": 2, "processing": 1, "published": 1, "retry": 1, "failed": 2}
    assert 120 <= lag < 180


def test_stats_lag_is_zero_when_all_published(server: ServerProcess) -> None:
    """With nothing unpublished the lag is 0."""
    event(Status.PUBLISHED)
    assert call(server, "/outbox/stats", key=superuser_key())[1]["lag_s"] == 0
