"""The group-commit writer, with a fake ``apply`` (no database)."""

from __future__ import annotations

import asyncio

from app.broker.commit import GroupCommitWriter, WriterClosed


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
