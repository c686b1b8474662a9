"""The announcement reader of a runtime in this process, on the session database, with its reads held
at a chosen point (what a loaded machine does by chance to a server that has just started), failed,
or overlapping a transaction held open on another connection."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import OperationalError, connection, transaction

from app.broker import announcements
from app.broker.announcements import Change
from app.broker.runtime import BrokerRuntime
from relays.announcements import AnnouncementReader, announcement_loop
from relays.database_thread import DatabaseThread
from tests.databases import BACKEND
from tests.protocol import TIMEOUT_S, make_topic

postgres_only = pytest.mark.skipif(BACKEND != "postgres", reason="SQLite commits one writing transaction at a time")


@pytest.fixture
async def first_read_held(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BrokerRuntime]:
    """A runtime whose announcement loop has loaded the topic directory and is held in its first read
    of the feed (in its database thread) until the test ends."""
    reading, go = threading.Event(), threading.Event()
    read = announcements.read

    def held(after: int, holes: list[int]) -> list[Change]:
        reading.set()
        go.wait(TIMEOUT_S)
        return read(after, holes)

    monkeypatch.setattr(announcements, "read", held)
    runtime = BrokerRuntime()
    loop = asyncio.create_task(announcement_loop(runtime))
    try:
        assert await asyncio.to_thread(reading.wait, TIMEOUT_S), "the first read of the feed never began"
        assert runtime.directory.ready
        yield runtime
    finally:
        go.set()
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await runtime.stop()


async def test_topic_created_during_the_first_feed_read_is_found(first_read_held: BrokerRuntime) -> None:
    """A topic created elsewhere after the directory was loaded, before the feed's first read was
    applied, is found (it was refused as "does not exist" on a server just started)."""
    slug = make_topic()
    view = await asyncio.wait_for(first_read_held.topic_view(slug, AnonymousUser(), "anonymous"), TIMEOUT_S)
    assert view is not None and view.slug == slug


@pytest.fixture
async def reader() -> AsyncIterator[AnnouncementReader]:
    """An announcement reader of a runtime in this process, driven by the test (no loop)."""
    runtime = BrokerRuntime()
    database = DatabaseThread("test-announcements")
    reader = AnnouncementReader(runtime, database)
    runtime.catch_up = reader.catch_up
    try:
        yield reader
    finally:
        runtime.catch_up = None
        await database.close()
        await runtime.stop()


async def test_failed_read_does_not_answer_for_a_waiting_lookup(
    reader: AnnouncementReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup catching up after a read that began after it asked failed reads the feed itself
    (it answered "does not exist" for a topic created elsewhere a moment before)."""
    await reader.read()  # loads the topic directory
    queried, release = threading.Event(), threading.Event()
    calls = itertools.count(1)
    read = announcements.read

    def scripted(after: int, holes: list[int]) -> list[Change]:
        call = next(calls)
        if call == 2:
            raise OperationalError("the database went away")
        rows = read(after, holes)
        if call == 1:  # held once its rows are read: the topic is created after them
            queried.set()
            release.wait(TIMEOUT_S)
        return rows

    monkeypatch.setattr(announcements, "read", scripted)
    runtime = reader.runtime
    earlier = asyncio.create_task(reader.read())
    try:
        assert await asyncio.to_thread(queried.wait, TIMEOUT_S), "the held read never queried"
        slug = make_topic()
        assert runtime.directory.missing(slug)  # the lookup must catch up
        # Tasks start in the order they were created: the failing read waits for the lock ahead of
        # the lookup, and begins only after the lookup asked.
        failing = asyncio.create_task(reader.read())
        lookup = asyncio.create_task(runtime.topic_view(slug, AnonymousUser(), "anonymous"))
        await asyncio.sleep(0)  # both run until they wait for the lock
        assert not failing.done() and not lookup.done()
    finally:
        release.set()
    await asyncio.wait_for(earlier, TIMEOUT_S)
    with pytest.raises(OperationalError):
        await asyncio.wait_for(failing, TIMEOUT_S)
    view = await asyncio.wait_for(lookup, TIMEOUT_S)
    assert view is not None and view.slug == slug


@postgres_only
async def test_change_committed_late_below_the_start_is_applied(reader: AnnouncementReader) -> None:
    """A topic whose announcement took its id before a later one committed, and committed only
    after the reader started, is found (on PostgreSQL it stayed "does not exist")."""
    made, commit = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def held_open() -> None:
        try:
            with transaction.atomic():
                outcome["slug"] = make_topic()
                made.set()
                if not commit.wait(TIMEOUT_S):
                    raise TimeoutError("never told to commit")
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc
        finally:
            made.set()
            connection.close()

    thread = threading.Thread(target=held_open)
    thread.start()
    try:
        assert await asyncio.to_thread(made.wait, TIMEOUT_S) and "error" not in outcome, outcome
        later = make_topic()  # committed with higher ids: the feed's end is beyond the held ones
        await reader.read()  # starts: notes the feed's end, loads the directory, reads
        assert reader.runtime.directory.missing(outcome["slug"]) and not reader.runtime.directory.missing(later)
    finally:
        commit.set()
        await asyncio.to_thread(thread.join, TIMEOUT_S)
    assert "error" not in outcome, outcome
    view = await asyncio.wait_for(
        reader.runtime.topic_view(outcome["slug"], AnonymousUser(), "anonymous"), TIMEOUT_S
    )
    assert view is not None and view.slug == outcome["slug"]


def test_read_gives_rows_after_the_cursor_and_committed_holes_in_id_order() -> None:
    """``read`` answers the rows beyond its cursor and those of its holes, each once, by id."""
    for _ in range(4):
        announcements.record_rights(make_topic(), exists=True, response=False, origin="")
    newest = sorted(announcements.newest_ids()[:4])
    rows = announcements.read(newest[2], [newest[0], newest[2] + 1])
    assert [row.id for row in rows] == [newest[0], newest[3]]
