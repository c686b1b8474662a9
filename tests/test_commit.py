"""The group-commit writer, with a fake ``apply`` (no database)."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest
from django.db import OperationalError

from app.broker.commit import GroupCommitWriter, WriterClosed
from tests.full_disk import fill_up


async def test_backlog_commits_in_one_batch():
    """Ops queued while a commit runs go into the next transaction together, in order."""
    batches: list[list[int]] = []

    def apply(ops):
        batches.append(list(ops))
        return list(ops)

    writer = GroupCommitWriter(apply=apply)
    results: list[int] = []
    for n in range(5):
        writer.submit(n, results.append)
    last = await writer.write(5)
    assert results == [0, 1, 2, 3, 4] and last == 5
    assert [n for batch in batches for n in batch] == [0, 1, 2, 3, 4, 5]
    assert len(batches) < 6
    await writer.stop()


async def test_failed_commit_reports_every_op():
    """When the transaction fails, each op's callback gets the error (never a false success)."""

    def apply(ops):
        raise RuntimeError("database down")

    writer = GroupCommitWriter(apply=apply)
    result = await writer.write(1)
    assert isinstance(result, RuntimeError)
    await writer.stop()


async def test_full_disk_is_a_warning_line(caplog: pytest.LogCaptureFixture):
    """A commit failing on a full disk refuses its ops and logs one WARNING without a traceback, not an ERROR."""

    def apply(ops):
        fill_up()

    writer = GroupCommitWriter(apply=apply)
    with caplog.at_level(logging.WARNING, logger="app.broker.commit"):
        result = await writer.write(1)
    await writer.stop()
    assert isinstance(result, OperationalError) and "full" in str(result)
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "disk is full" in caplog.records[0].getMessage()


async def test_unreachable_database_is_a_line_as_it_starts_and_as_it_ends(caplog: pytest.LogCaptureFixture):
    """Commits failing while the database is unreachable refuse their ops and log one WARNING as the
    outage starts and one as it ends, no traceback, not one line per batch."""
    failing = 3

    def apply(ops):
        nonlocal failing
        if failing:
            failing -= 1
            raise OperationalError("the connection is closed") from psycopg.OperationalError("the connection is closed")
        return list(ops)

    writer = GroupCommitWriter(apply=apply)
    with caplog.at_level(logging.WARNING, logger="app.broker.commit"):
        results = [await writer.write(n) for n in range(4)]
    await writer.stop()
    assert [isinstance(result, OperationalError) for result in results] == [True, True, True, False]
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None), ("WARNING", None)]
    assert "group commit of 1 ops failed, the database is unreachable" in caplog.records[0].getMessage()
    assert "group commit: the database is reachable again after 3 failures" in caplog.records[1].getMessage()


async def test_unknown_failure_is_an_error_with_traceback(caplog: pytest.LogCaptureFixture):
    """A commit failing with no known outage is logged as an ERROR with its traceback: a defect."""

    def apply(ops):
        raise RuntimeError("a bug")

    writer = GroupCommitWriter(apply=apply)
    with caplog.at_level(logging.WARNING, logger="app.broker.commit"):
        await writer.write(1)
    await writer.stop()
    assert [(r.levelname, r.exc_info is not None) for r in caplog.records] == [("ERROR", True)]


async def test_stop_flushes_then_refuses():
    """stop() writes what is queued; later submissions are refused, not lost silently."""
    written: list[int] = []
    writer = GroupCommitWriter(apply=lambda ops: [written.append(op) for op in ops])
    writer.submit(1)
    await writer.stop()
    assert written == [1]
    assert isinstance(await writer.write(2), WriterClosed)


async def test_flush_waits_for_lingering_acks():
    """flush() returns only once fire-and-forget ops (which may linger) are written."""
    written: list[int] = []
    writer = GroupCommitWriter(apply=lambda ops: [written.append(op) for op in ops])
    writer.submit(1)
    writer.submit(2)
    await asyncio.wait_for(writer.flush(), 5)
    assert written == [1, 2]
    await writer.stop()


def failing_op_by_op(ops):
    """What write_batch returns when a batch fell back to one op at a time (after a duplicate) and
    each op then met a full disk: the errors as results, nothing raised."""
    try:
        fill_up()
    except OperationalError as exc:
        return [exc] * len(ops)


async def test_an_outage_met_op_by_op_is_logged(caplog: pytest.LogCaptureFixture):
    """Ops failing one at a time on an outage (no commit raised) log its start: an unacked one is not lost unlogged."""
    writer = GroupCommitWriter(apply=failing_op_by_op)
    with caplog.at_level(logging.WARNING, logger="app.broker.commit"):
        writer.submit(1)
        await writer.flush()
    await writer.stop()
    assert [(r.levelname, "disk is full" in r.getMessage()) for r in caplog.records] == [("WARNING", True)]


async def test_an_outage_met_op_by_op_is_no_end_of_it(caplog: pytest.LogCaptureFixture):
    """A batch whose ops all failed on the outage under way does not log that outage as ended; the next commit does."""
    batches = iter([lambda ops: fill_up(), failing_op_by_op, list])
    writer = GroupCommitWriter(apply=lambda ops: next(batches)(ops))
    with caplog.at_level(logging.WARNING, logger="app.broker.commit"):
        results = [await writer.write(n) for n in range(3)]
    await writer.stop()
    assert [isinstance(result, OperationalError) for result in results] == [True, True, False]
    assert [r.getMessage().split(" (")[0].split(" over ")[0] for r in caplog.records] == [
        "group commit of 1 ops failed, the database's disk is full",
        "group commit: the database's disk has room again after 2 failures"]
