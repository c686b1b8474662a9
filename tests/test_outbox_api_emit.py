"""Emitting events over HTTP (POST /api/v1/outbox/events, on a real server): who may emit where, what is
stored, and the invalid events refused (422, 409) with nothing stored."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission

from app.outbox.emit import configured_targets
from app.outbox.models import OutboxEvent, Status
from tests.api_client import call
from tests.outbox import outbox_key
from tests.protocol import make_token, make_topic, make_user, superuser_key, unique
from tests.servers import ServerProcess

pytestmark = pytest.mark.usefixtures("empty_outbox")


def test_emit_to_a_topic_needs_the_right_to_publish_there(server: ServerProcess) -> None:
    """Emitting for a topic the caller may not publish to is refused (403), nothing stored."""
    slug = make_topic(public=False, anonymous=False)
    body = {"type": "t", "source": "/tests/emit", "target": "topic", "destination": slug}
    status, answer = call(server, "/outbox/events", "POST", outbox_key("add_outboxevent"), body)
    assert status == 403 and slug in answer["detail"]
    assert not OutboxEvent.objects.exists()


def test_emit_with_a_chosen_stream_needs_change_permission(server: ServerProcess) -> None:
    """Choosing a RabbitMQ routing key or Redis stream over HTTP needs outbox.change_outboxevent."""
    body = {"type": "t", "source": "/tests/emit", "target": "redis", "destination": "someone.elses.stream"}
    status, answer = call(server, "/outbox/events", "POST", outbox_key("add_outboxevent"), body)
    assert status == 403 and "change_outboxevent" in answer["detail"]


@pytest.mark.parametrize("source", ["/work-requests", "/cqrs"])
def test_emit_with_switchyards_own_source_is_refused(server: ServerProcess, source: str) -> None:
    """Work request and CQRS events are Switchyard's own: one with their source is refused (422), nothing stored."""
    body = {"type": "switchyard.work_request.completed", "source": source, "data": {"id": 1}}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "Switchyard's own" in answer["detail"]
    assert not OutboxEvent.objects.exists()


def test_emit_of_a_cqrs_payload_is_refused(server: ServerProcess) -> None:
    """The CQRS content type (published on the CQRS exchange, routed by its cqrs_id) is refused over HTTP."""
    body = {"type": "cqrs.author.save", "source": "/tests/emit", "datacontenttype": "application/vnd.django-cqrs+json",
            "data": {"cqrs_id": "author"}}
    status, answer = call(server, "/outbox/events", "POST", superuser_key(), body)
    assert status == 422 and "CQRS" in answer["detail"]
    assert not OutboxEvent.objects.exists()


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
