"""Transitions raced from several database connections: the database picks exactly one winner.

Interleaved on PostgreSQL: the first transition's transaction is held open while the second one is
seen waiting on its lock (pg_stat_activity), then the first commits and the second re-checks its
guard against the committed row. Free-for-all races run on both backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from app.work.models import Result, Status, WorkRequest
from app.work.sessions import close_session, open_session, socket_session
from app.work.submission import submit
from app.work.transitions import abort, assign, complete, retry
from app.work.workers import disconnect_and_release, mark_connected
from tests.databases import BACKEND
from tests.work import completed, in_thread, pending, reload, running, worker

TIMEOUT_S = 30.0
postgres_only = pytest.mark.skipif(BACKEND != "postgres", reason="SQLite runs one writing transaction at a time")


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


def interleaved(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``first`` in a transaction held open until ``second`` (on another connection) waits on a
    lock, then commit it; both results."""
    done, release = threading.Event(), threading.Event()

    def held() -> Any:
        with transaction.atomic():
            value = first()
            done.set()
            assert release.wait(TIMEOUT_S)
        return value

    thread_a, outcome_a = in_thread(held)
    assert done.wait(TIMEOUT_S), outcome_a
    thread_b, outcome_b = in_thread(second)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not waiting_on_a_lock():
            assert time.monotonic() < deadline, "the second transition never waited for the first"
            assert thread_b.is_alive(), f"the second transition did not wait: {outcome_b}"
            time.sleep(0.01)  # bounded-poll
    finally:
        release.set()
        thread_a.join(TIMEOUT_S)
        thread_b.join(TIMEOUT_S)
    for outcome in (outcome_a, outcome_b):
        if "error" in outcome:
            raise outcome["error"]
    return outcome_a["value"], outcome_b["value"]


def free_for_all(calls: list[Callable[[], Any]]) -> list[Any]:
    """Start every call on its own connection at once (a barrier); their results."""
    barrier = threading.Barrier(len(calls))

    def at_once(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            barrier.wait(TIMEOUT_S)
            return call()
        return run

    started = [in_thread(at_once(call)) for call in calls]
    for thread, _ in started:
        thread.join(TIMEOUT_S)
    results = []
    for _, outcome in started:
        if "error" in outcome:
            raise outcome["error"]
        results.append(outcome["value"])
    return results


@postgres_only
def test_two_workers_claiming_one_request_one_wins() -> None:
    """Two assignments of one request on two connections: the first commits, the second finds it taken."""
    request, first, second = pending(), worker(), worker()
    won_first, won_second = interleaved(lambda: assign(request.pk, first.pk), lambda: assign(request.pk, second.pk))
    assert (won_first, won_second) == (True, False)
    assert (reload(request).worker_id, reload(request).attempts) == (first.pk, 1)


@postgres_only
def test_complete_then_abort_racing_one_wins() -> None:
    """A completion and an abort of one running request: the completion commits first, the abort finds nothing."""
    request = running()
    completed_it, aborted_it = interleaved(lambda: complete(request.pk, Result.SUCCESS), lambda: abort(request.pk))
    assert (completed_it, aborted_it) == (True, False)
    assert (reload(request).status, reload(request).result) == (Status.COMPLETED, Result.SUCCESS)


@postgres_only
def test_abort_then_complete_racing_one_wins() -> None:
    """An abort and a completion of one running request: the abort commits first, the completion finds nothing."""
    request = running()
    aborted_it, completed_it = interleaved(lambda: abort(request.pk), lambda: complete(request.pk, Result.SUCCESS))
    assert (aborted_it, completed_it) == (True, False)
    assert (reload(request).status, reload(request).result) == (Status.ABORTED, Result.NONE)


@postgres_only
def test_two_requests_racing_for_one_slot_one_wins() -> None:
    """Two requests assigned at once to a worker with one slot: the worker's lock lets one through."""
    on, first, second = worker(concurrency=1), pending(), pending()
    won_first, won_second = interleaved(lambda: assign(first.pk, on.pk), lambda: assign(second.pk, on.pk))
    assert (won_first, won_second) == (True, False)
    assert WorkRequest.objects.filter(worker=on, status=Status.RUNNING).count() == 1


@postgres_only
def test_two_retries_racing_one_new_request() -> None:
    """Two retries of one failed request: one supersedes it, the other gets None."""
    old = completed(Result.FAILURE)
    new, again = interleaved(lambda: retry(old.pk), lambda: retry(old.pk))
    assert new is not None and again is None
    assert WorkRequest.objects.filter(supersedes=old.pk).count() == 1


def test_eight_workers_claiming_one_request_one_wins() -> None:
    """Eight connections assigning one request at once: exactly one gets it."""
    request = pending()
    fleet = [worker() for _ in range(8)]
    results = free_for_all([lambda w=w: assign(request.pk, w.pk) for w in fleet])  # type: ignore[misc]
    assert results.count(True) == 1
    assert reload(request).worker_id == fleet[results.index(True)].pk


def test_completions_and_aborts_racing_one_wins() -> None:
    """Four completions and four aborts of one running request at once: exactly one happens."""
    request = running()
    calls: list[Callable[[], Any]] = [lambda: complete(request.pk, Result.SUCCESS)] * 4
    calls += [lambda: abort(request.pk)] * 4
    results = free_for_all(calls)
    assert results.count(True) == 1
    final = reload(request)
    assert final.status == (Status.COMPLETED if results.index(True) < 4 else Status.ABORTED)


def test_many_requests_racing_for_a_workers_slots() -> None:
    """Six requests assigned at once to a worker with two slots: two run."""
    on = worker(concurrency=2)
    requests = [pending() for _ in range(6)]
    results = free_for_all([lambda r=r: assign(r.pk, on.pk) for r in requests])  # type: ignore[misc]
    assert results.count(True) == 2
    assert WorkRequest.objects.filter(worker=on, status=Status.RUNNING).count() == 2


@postgres_only
def test_submit_racing_a_failing_dependency_ends_the_new_request() -> None:
    """A request submitted while its dependency fails waits for that failure and is failed with it, not left pending."""
    parent = running()
    _, child = interleaved(
        lambda: complete(parent.pk, Result.FAILURE), lambda: submit("noop", {}, dependencies=[parent.pk])
    )
    child = reload(child)
    assert (child.status, child.result, child.cascaded_from_id) == (Status.COMPLETED, Result.FAILURE, parent.pk)


@postgres_only
def test_retry_racing_an_aborted_copied_dependency_aborts_the_new_request() -> None:
    """A retry whose copied dependency is aborted meanwhile waits for the abort and is aborted with it."""
    parent = running()
    child = pending(dependencies=[parent.pk])
    assert abort(child.pk)
    _, new = interleaved(lambda: abort(parent.pk), lambda: retry(child.pk))
    new = reload(new)
    assert (new.status, new.cascaded_from_id) == (Status.ABORTED, parent.pk)


def test_two_large_cascades_at_once_both_complete() -> None:
    """Two parents failing at once, with 400 dependents each and 400 shared: both cascades finish (no deadlock)."""
    parents = [running(), running()]
    groups = [[parents[0].pk], [parents[1].pk], [parents[0].pk, parents[1].pk]]
    children = [pending(dependencies=group).pk for group in groups for _ in range(400)]
    assert free_for_all([lambda p=p: complete(p.pk, Result.FAILURE) for p in parents]) == [True, True]  # type: ignore[misc]
    assert not WorkRequest.objects.filter(pk__in=children).exclude(status=Status.COMPLETED).exists()


@postgres_only
def test_lost_worker_sweep_racing_a_reconnect_releases_nothing() -> None:
    """A sweep that saw the worker lost, racing its reconnection, leaves the reconnected worker its request."""
    on, then = worker(), timezone.now() - timedelta(minutes=10)
    request = running(on=on)
    mark_connected(on.pk, then)
    _, released = interleaved(
        lambda: mark_connected(on.pk), lambda: disconnect_and_release(on.pk, then, last_seen_at=then)
    )
    assert released is None
    assert (reload(request).status, reload(request).worker_id) == (Status.RUNNING, on.pk)


@postgres_only
def test_workers_released_at_once_do_not_deadlock() -> None:
    """Six workers with four requests each, their sessions ended at once: every request goes back to pending."""
    fleet = [worker(concurrency=4) for _ in range(6)]
    opened = [open_session(on.pk) for on in fleet]
    requests = [running(on=on).pk for on in fleet for _ in range(4)]
    ended = free_for_all(
        [lambda on=on, at=at: close_session(on.pk, at.connected_at) for on, at in zip(fleet, opened, strict=True)]  # type: ignore[misc, union-attr]
    )
    assert all(len(released) == 4 for released in ended)
    assert WorkRequest.objects.filter(pk__in=requests, status=Status.PENDING).count() == len(requests)


@postgres_only
def test_assignment_to_a_session_racing_its_replacement_gives_nothing() -> None:
    """An assignment for a session that a new connection replaces meanwhile waits for it, then assigns nothing."""
    on = worker()
    older = open_session(on.pk)
    assert older is not None
    request = pending()
    newer, given = interleaved(
        lambda: open_session(on.pk), lambda: assign(request.pk, on.pk, session=socket_session(older.connected_at))
    )
    assert newer is not None and given is False
    assert reload(request).status == Status.PENDING
