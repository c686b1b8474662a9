"""A worker socket's session (app/work/sessions.py): admission by token, what connecting and leaving do
to its requests, silent workers whose server is gone, and what a worker's reports change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from app.work.models import Result, Status, Worker
from app.work.sessions import (
    Completion,
    Ownership,
    admit,
    close_session,
    open_session,
    ownership,
    release_lost,
    report_completed,
    report_dynamic_metadata,
    seen_write_due,
)
from app.work.tasks import InvalidTaskData
from app.work.transitions import Returned, abort
from app.work.workers import TOKEN_DISABLED, register_worker, set_enabled
from tests.protocol import unique
from tests.work import reload, running, worker


def test_admit_tells_who_and_why_not() -> None:
    """A worker's key admits it; a disabled one is admitted with TOKEN_DISABLED; another key is nobody."""
    registered, key = register_worker(unique("w"))
    admitted = admit(key)
    assert admitted is not None
    assert (admitted.worker_id, admitted.token_id, admitted.rejection) == (registered.pk, registered.token_id, None)
    set_enabled(registered, False)
    assert admit(key) == admitted.__class__(registered.pk, registered.name, registered.token_id, TOKEN_DISABLED)
    assert admit("not-a-key") is None


def test_connecting_returns_what_an_earlier_session_left_running() -> None:
    """A worker that connects starts with nothing running: its earlier session's requests go back to pending."""
    registered = worker()
    left = running(on=registered)
    opened = open_session(registered.pk)
    assert opened is not None and opened.released == {left.pk: Returned.PENDING}
    assert reload(left).status == Status.PENDING
    assert Worker.objects.get(pk=registered.pk).connected_at == opened.connected_at


def test_connecting_refused_when_disabled_since_admission() -> None:
    """A worker disabled between its admission and its session opening gets no session."""
    registered = worker()
    set_enabled(registered, False)
    assert open_session(registered.pk) is None
    assert Worker.objects.get(pk=registered.pk).connected_at is None


def test_leaving_returns_its_requests_once() -> None:
    """The session that ends disconnects the worker and returns its requests; ending it again does nothing."""
    registered = worker()
    opened = open_session(registered.pk)
    assert opened is not None
    request = running(on=registered)
    assert close_session(registered.pk, opened.connected_at) == {request.pk: Returned.PENDING}
    assert close_session(registered.pk, opened.connected_at) is None
    assert Worker.objects.get(pk=registered.pk).connected_at is None


def test_older_session_ending_leaves_the_newer_one() -> None:
    """An older session ending after a newer one began neither disconnects the worker nor returns its requests."""
    registered = worker()
    older = open_session(registered.pk, timezone.now() - timedelta(seconds=5))
    newer = open_session(registered.pk)
    assert older is not None and newer is not None
    request = running(on=registered)
    assert close_session(registered.pk, older.connected_at) is None
    assert reload(request).status == Status.RUNNING
    assert Worker.objects.get(pk=registered.pk).connected_at == newer.connected_at


@override_settings(WORKER_LOST_AFTER_S=60)
def test_release_lost_ends_silent_sessions_after_the_write_lag() -> None:
    """A worker silent in the database past WORKER_LOST_AFTER_S and the lag of last_seen_at writes is released."""
    now = timezone.now()
    silent, recent = worker(), worker()
    open_session(silent.pk, now - timedelta(seconds=76))  # 60 s + a quarter of it, and more
    open_session(recent.pk, now - timedelta(seconds=70))  # lost by the rule, but within the write lag
    request = running(on=silent)
    ended = release_lost(now)
    assert ended.get(silent.pk) == {request.pk: Returned.PENDING}
    assert recent.pk not in ended
    assert release_lost(now).get(silent.pk) is None  # ended once


def test_completion_by_its_worker() -> None:
    """The worker running a request completes it with its result and output."""
    registered = worker()
    request = running(on=registered)
    assert report_completed(registered.pk, request.pk, "failure", {"log": "x"}) is Completion.DONE
    done = reload(request)
    assert (done.status, done.result, done.output_data) == (Status.COMPLETED, Result.FAILURE, {"log": "x"})


def test_completion_of_an_aborted_request_says_so() -> None:
    """Completing a request aborted meanwhile records nothing and says it was aborted."""
    registered = worker()
    request = running(on=registered)
    assert abort(request.pk)
    assert report_completed(registered.pk, request.pk, "success", None) is Completion.ABORTED
    assert ownership(registered.pk, request.pk) is Ownership.ABORTED
    assert reload(request).status == Status.ABORTED


def test_completion_of_another_workers_request_refused() -> None:
    """A worker cannot complete a request running on another worker."""
    mine, other = worker(), worker()
    request = running(on=other)
    assert report_completed(mine.pk, request.pk, "success", None) is Completion.NOT_ITS_OWN
    assert ownership(mine.pk, request.pk) is Ownership.NOT_ITS_OWN
    assert ownership(other.pk, request.pk) is Ownership.RUNNING
    assert reload(request).status == Status.RUNNING


@override_settings(WORK_REQUEST_DATA_MAX_BYTES=100)
def test_oversized_metadata_refused() -> None:
    """Metadata over WORK_REQUEST_DATA_MAX_BYTES is refused and the stored metadata kept."""
    registered = worker()
    report_dynamic_metadata(registered.pk, {"arch": "amd64"})
    with pytest.raises(InvalidTaskData, match="WORK_REQUEST_DATA_MAX_BYTES"):
        report_dynamic_metadata(registered.pk, {"blob": "x" * 200})
    assert Worker.objects.get(pk=registered.pk).dynamic_metadata == {"arch": "amd64"}


@pytest.mark.parametrize(("last", "now", "due"), [
    (None, 0.0, True),     # never written
    (0.0, 14.9, False),    # within a quarter of 60 s
    (0.0, 15.0, True),
])
def test_last_seen_writes_throttled(last: float | None, now: float, due: bool) -> None:
    """last_seen_at is written at most every quarter of WORKER_LOST_AFTER_S (60 s here)."""
    assert seen_write_due(last, now, 60.0) is due
