"""Workers: registration with a token of their own, what that token authenticates, presence, and
what happens to a lost worker's requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone

from app.auth.services import token_for_key
from app.broker.models import Announcement
from app.work.models import Result, Status, Worker
from app.work.transitions import Returned
from app.work.workers import (
    TOKEN_DISABLED,
    InvalidMetadata,
    WorkerNameTaken,
    disconnect_and_release,
    is_lost,
    lost_workers,
    mark_connected,
    mark_seen,
    register_worker,
    rejection,
    release_requests,
    report_metadata,
    set_enabled,
    worker_for_key,
)
from tests.protocol import unique
from tests.work import reload, running, worker

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int | None) -> datetime | None:
    return None if seconds is None else T0 + timedelta(seconds=seconds)


def test_register_returns_a_key_for_that_worker() -> None:
    """A registered worker's key finds the worker."""
    registered, key = register_worker(unique("w"), concurrency=3, static_metadata={"arch": "amd64"})
    found = worker_for_key(key)
    assert found is not None and found.pk == registered.pk
    assert (found.concurrency, found.metadata()) == (3, {"arch": "amd64"})


def test_key_is_stored_hashed() -> None:
    """Only the key's sha256 hash is stored, as for every token."""
    registered, key = register_worker(unique("w"))
    assert key not in (registered.token.key_hash, registered.token.prefix)


def test_worker_token_authenticates_nobody_else() -> None:
    """The broker, the API and the admin do not take a worker's key: its owner is inactive."""
    registered, key = register_worker(unique("w"))
    assert token_for_key(key) is None
    owner = get_user_model().objects.get(pk=registered.token.user_id)
    assert not owner.is_active and not owner.has_usable_password()


def test_name_taken_refused() -> None:
    """Two workers cannot share a name, and the refusal leaves no owner or token behind."""
    name = unique("w")
    register_worker(name)
    users_before = get_user_model().objects.count()
    with pytest.raises(WorkerNameTaken):
        register_worker(name)
    assert get_user_model().objects.count() == users_before


def test_unknown_key_finds_no_worker() -> None:
    """A key of no worker finds none."""
    assert worker_for_key("no-such-key") is None


def test_disabled_worker_rejected_with_its_reason() -> None:
    """A disabled worker's key still finds it, with reason TOKEN_DISABLED."""
    registered, key = register_worker(unique("w"))
    assert rejection(registered) is None
    set_enabled(registered, False)
    found = worker_for_key(key)
    assert found is not None and rejection(found) == TOKEN_DISABLED


def test_disabling_announces_the_revocation() -> None:
    """Disabling a worker is announced as its token's revocation (every server closes its sockets)."""
    registered = worker()
    set_enabled(registered, False)
    assert Announcement.objects.filter(kind=Announcement.REVOKED, token_id=registered.token_id).exists()


def test_connected_then_seen_then_disconnected() -> None:
    """Presence: connected sets both times, a heartbeat moves last_seen_at, disconnecting clears connected_at."""
    registered, now = worker(), timezone.now()
    mark_connected(registered.pk, now)
    mark_seen(registered.pk, now + timedelta(seconds=5))
    registered.refresh_from_db()
    assert (registered.connected_at, registered.last_seen_at) == (now, now + timedelta(seconds=5))
    assert disconnect_and_release(registered.pk, now) == {}
    registered.refresh_from_db()
    assert (registered.connected_at, registered.connected_via) == (None, "")


def test_disconnect_of_an_older_connection_ignored() -> None:
    """A connection that ended after a newer one began leaves the worker connected."""
    registered, now = worker(), timezone.now()
    mark_connected(registered.pk, now)
    assert disconnect_and_release(registered.pk, now - timedelta(seconds=30)) is None
    registered.refresh_from_db()
    assert registered.connected_at == now


def test_reported_metadata_leaves_admin_fields() -> None:
    """A worker's report replaces its dynamic metadata only."""
    registered = worker(concurrency=2, arch="amd64")
    report_metadata(registered.pk, {"arch": "arm64", "cores": 8})
    registered.refresh_from_db()
    assert (registered.concurrency, registered.metadata()) == (2, {"arch": "amd64", "cores": 8})


@pytest.mark.parametrize(("connected_s", "seen_s", "now_s", "lost"), [
    (None, None, 1000, False),   # disconnected: gone, not lost
    (0, None, 59, False),
    (0, None, 60, True),         # connected and never heard since
    (0, 50, 109, False),         # the heartbeat counts
    (0, 50, 110, True),
    (100, 50, 130, False),       # reconnected after the last heartbeat: the connection counts
])
def test_lost_rule(connected_s: int | None, seen_s: int | None, now_s: int, lost: bool) -> None:
    """A connected worker silent for WORKER_LOST_AFTER_S (60 here) since it was last heard is lost."""
    assert is_lost(at(connected_s), at(seen_s), T0 + timedelta(seconds=now_s), 60) is lost


@override_settings(WORKER_LOST_AFTER_S=60)
def test_lost_workers_query_follows_the_rule() -> None:
    """lost_workers finds the silent connected worker and neither the heard one nor a disconnected one."""
    now = timezone.now()
    silent, heard, gone = worker(), worker(), worker()
    mark_connected(silent.pk, now - timedelta(seconds=120))
    mark_connected(heard.pk, now - timedelta(seconds=120))
    mark_seen(heard.pk, now - timedelta(seconds=10))
    Worker.objects.filter(pk=gone.pk).update(last_seen_at=now - timedelta(seconds=600))
    found = set(lost_workers(now).filter(pk__in=[silent.pk, heard.pk, gone.pk]).values_list("pk", flat=True))
    assert found == {silent.pk}


def test_release_returns_what_the_worker_runs() -> None:
    """A lost worker's running requests go back to pending; other workers' stay."""
    lost, other = worker(concurrency=2), worker()
    first, second, elsewhere = running(on=lost), running(on=lost), running(on=other)
    assert release_requests(lost.pk) == {first.pk: Returned.PENDING, second.pk: Returned.PENDING}
    assert {reload(first).status, reload(second).status, reload(elsewhere).status} == {Status.PENDING, Status.RUNNING}
    assert reload(elsewhere).worker_id == other.pk


def test_deleting_a_workers_token_returns_its_request() -> None:
    """A worker deleted with its token (API, owner deleted) leaves no request running without a worker."""
    gone = worker()
    request = running(on=gone)
    gone.token.delete()
    assert not Worker.objects.filter(pk=gone.pk).exists()
    assert (reload(request).status, reload(request).worker_id) == (Status.PENDING, None)


@override_settings(WORK_REQUEST_MAX_ATTEMPTS=1)
def test_release_at_the_last_attempt_completes_as_error() -> None:
    """Released at its last attempt, a request completes as error."""
    lost = worker()
    request = running(on=lost)
    assert release_requests(lost.pk) == {request.pk: Returned.ERROR}
    assert reload(request).result == Result.ERROR


def test_disconnect_and_release_of_a_worker_as_seen() -> None:
    """A worker still as the sweep saw it is disconnected and its request returned to pending."""
    lost, then = worker(), timezone.now() - timedelta(minutes=10)
    request = running(on=lost)
    mark_connected(lost.pk, then)
    assert disconnect_and_release(lost.pk, then, last_seen_at=then) == {request.pk: Returned.PENDING}
    lost.refresh_from_db()
    assert (lost.connected_at, reload(request).status) == (None, Status.PENDING)


def test_disconnect_and_release_after_a_heartbeat_does_nothing() -> None:
    """A worker heard from after the sweep saw it keeps its connection and its request."""
    lost, then = worker(), timezone.now() - timedelta(minutes=10)
    request = running(on=lost)
    mark_connected(lost.pk, then)
    mark_seen(lost.pk)
    assert disconnect_and_release(lost.pk, then, last_seen_at=then) is None
    lost.refresh_from_db()
    assert (lost.connected_at, reload(request).status) == (then, Status.RUNNING)


def test_reported_metadata_that_is_not_an_object_refused() -> None:
    """A worker's report must be a JSON object."""
    registered = worker()
    with pytest.raises(InvalidMetadata, match="must be a JSON object"):
        report_metadata(registered.pk, ["gpu"])  # type: ignore[arg-type]


@override_settings(WORKER_METADATA_MAX_BYTES=32)
def test_reported_metadata_too_large_refused() -> None:
    """A report larger than WORKER_METADATA_MAX_BYTES encoded is refused and the previous one kept."""
    registered = worker()
    report_metadata(registered.pk, {"arch": "amd64"})
    with pytest.raises(InvalidMetadata, match="more than WORKER_METADATA_MAX_BYTES=32"):
        report_metadata(registered.pk, {"tools": ["x" * 40]})
    registered.refresh_from_db()
    assert registered.dynamic_metadata == {"arch": "amd64"}


def test_metadata_written_as_a_list_counts_as_none() -> None:
    """Static metadata stored as a list (written around the checks) counts as no metadata instead of raising."""
    registered = worker()
    Worker.objects.filter(pk=registered.pk).update(static_metadata=["gpu"], dynamic_metadata={"arch": "amd64"})
    registered.refresh_from_db()
    assert registered.metadata() == {"arch": "amd64"}
