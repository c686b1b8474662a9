"""A worker socket's session (app/work/sessions.py): admission by token, what connecting and leaving do
to its requests, silent workers whose server is gone, and what a worker's reports change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from app.work.models import Status, Worker
from app.work.queue import next_request_for
from app.work.reports import HTTP_SESSION, NotRunning, complete_own, mark_polled
from app.work.sessions import (
    Believed,
    Ended,
    admit,
    close_session,
    open_session,
    reconcile,
    release_lost,
    seen_write_due,
    socket_session,
)
from app.work.transitions import Returned, abort, return_to_pending
from app.work.workers import TOKEN_DISABLED, register_worker, set_enabled
from tests.protocol import unique
from tests.work import clear_work, pending, reload, running, worker


@pytest.fixture(autouse=True)
def _empty_queue() -> Iterator[None]:
    clear_work()
    yield

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
    assert ended.get(silent.pk) == Ended("socket", {request.pk: Returned.PENDING})
    assert recent.pk not in ended
    assert release_lost(now).get(silent.pk) is None  # ended once


@pytest.mark.parametrize(("last", "now", "due"), [
    (None, 0.0, True),     # never written
    (0.0, 14.9, False),    # within a quarter of 60 s
    (0.0, 15.0, True),
])
def test_last_seen_writes_throttled(last: float | None, now: float, due: bool) -> None:
    """last_seen_at is written at most every quarter of WORKER_LOST_AFTER_S (60 s here)."""
    assert seen_write_due(last, now, 60.0) is due


def test_completion_of_an_earlier_run_records_nothing() -> None:
    """A late completion of an earlier run, after the request was given to the same worker again, is refused."""
    tag = unique("tag")
    registered = worker(tag=tag)
    request = running(on=registered, task_data={"requires": {"tag": tag}})
    assert return_to_pending(request.pk) is Returned.PENDING
    assert next_request_for(registered.pk) is not None
    with pytest.raises(NotRunning, match="runs on this worker as run 2"):
        complete_own(registered.pk, request.pk, "success", None, attempt=1)
    assert (reload(request).status, reload(request).attempts) == (Status.RUNNING, 2)


def test_replaced_session_is_given_no_work() -> None:
    """A connection whose session a newer one replaced gets nothing assigned, even with work waiting."""
    tag = unique("tag")
    registered = worker(tag=tag)
    older = open_session(registered.pk, timezone.now() - timedelta(seconds=5))
    newer = open_session(registered.pk)
    assert older is not None and newer is not None
    request = pending(task_data={"requires": {"tag": tag}})
    assert next_request_for(registered.pk, session=socket_session(older.connected_at)) is None
    assert reload(request).status == Status.PENDING
    given = next_request_for(registered.pk, session=socket_session(newer.connected_at))
    assert given is not None and given.pk == request.pk


def test_polling_refused_while_a_socket_session_holds_the_worker() -> None:
    """A worker connected over its socket is not marked polled, and HTTP polling gets it no work."""
    tag = unique("tag")
    registered = worker(tag=tag)
    opened = open_session(registered.pk)
    assert opened is not None
    pending(task_data={"requires": {"tag": tag}})
    assert not mark_polled(registered.pk)
    assert next_request_for(registered.pk, session=HTTP_SESSION) is None
    assert Worker.objects.get(pk=registered.pk).connected_at == opened.connected_at


def test_socket_takes_over_from_polling() -> None:
    """A socket opening returns what HTTP polling ran; polling after it ends is allowed again."""
    tag = unique("tag")
    registered = worker(tag=tag)
    assert mark_polled(registered.pk)
    request = pending(task_data={"requires": {"tag": tag}})
    assert next_request_for(registered.pk, session=HTTP_SESSION) is not None
    opened = open_session(registered.pk)
    assert opened is not None and opened.released == {request.pk: Returned.PENDING}
    assert close_session(registered.pk, opened.connected_at) == {}
    assert mark_polled(registered.pk)


def test_reconcile_finds_ended_sessions_and_lost_aborts() -> None:
    """Reconciling says which connections lost their session and which of their requests were aborted."""
    current, replaced = worker(concurrency=2), worker()
    old = open_session(replaced.pk, timezone.now() - timedelta(seconds=5))
    now = open_session(current.pk)
    assert old is not None and now is not None and open_session(replaced.pk) is not None
    kept, dropped = running(on=current), running(on=current)
    assert abort(dropped.pk)
    verdicts = reconcile([
        Believed(current.pk, now.connected_at, frozenset({kept.pk, dropped.pk})),
        Believed(replaced.pk, old.connected_at, frozenset()),
    ])
    assert [(v.current, v.aborted) for v in verdicts] == [(True, frozenset({dropped.pk})), (False, frozenset())]


@override_settings(WORKER_LOST_AFTER_S=60)
def test_polling_that_stopped_ends_as_an_http_session() -> None:
    """A polling worker silent past WORKER_LOST_AFTER_S is disconnected, its session named http, nothing returned."""
    polled = worker()
    then = timezone.now() - timedelta(seconds=120)
    assert mark_polled(polled.pk, then)
    assert release_lost().get(polled.pk) == Ended("http", {})
    assert Worker.objects.get(pk=polled.pk).connected_at is None
