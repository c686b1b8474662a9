"""The outbox's dead letters: retrying and deleting events over HTTP (/api/v1/outbox/, on a real server), one
or every failed one of a type or key, only in the states that allow it; and the admin's status filter and
retry action."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from app.outbox.models import OutboxEvent, Status
from tests.api_client import call
from tests.outbox import event, outbox_key
from tests.protocol import make_user, superuser_key
from tests.servers import ServerProcess

pytestmark = pytest.mark.usefixtures("empty_outbox")


# Retrying and deleting over HTTP
def test_retry_failed_event(server: ServerProcess) -> None:
    """Retrying a failed event (200) puts it back to pending with no attempts counted."""
    row = event(Status.FAILED)
    status, answer = call(server, f"/outbox/events/{row.pk}/retry", "POST", outbox_key("change_outboxevent"))
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
    status, answer = call(server, "/outbox/dead-letters/retry", "POST", outbox_key("change_outboxevent"))
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
    assert call(server, f"/outbox/events/{row.pk}", "DELETE", outbox_key("delete_outboxevent")) == (204, None)
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
