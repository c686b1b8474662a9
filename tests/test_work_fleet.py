"""This process's worker connections (app/work/fleet.py) and the after-commit notices that reach them
(app/work/push.py), with stand-in connections and backplane: no socket, no server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from app.work import push
from app.work.fleet import Fleet, Searched
from app.work.submission import submit
from app.work.transitions import abort, complete
from tests.work import pending, running, worker

T0 = timezone.now()


@dataclass(eq=False)
class Link:
    worker_id: int
    connected_at: datetime = T0
    heard_at: datetime = T0
    free: bool = True
    signature: str | None = None
    running: dict[int, int] = field(default_factory=dict)
    offers: int = 0
    aborts: list[int] = field(default_factory=list)
    closed: bool = False
    waiting: list[Searched] = field(default_factory=list)

    def idle(self) -> bool:
        return self.free

    def offer(self, done: Searched | None = None) -> bool:
        self.offers += 1
        if done is not None:
            self.waiting.append(done)
        return True

    def searched(self, found: bool, signature: str = "kind-a") -> None:
        """Its search ended: tell who waits."""
        self.signature = signature
        waiting, self.waiting = self.waiting, []
        for done in waiting:
            done(self, found)

    def abort(self, request_id: int) -> None:
        self.aborts.append(request_id)

    def replaced(self) -> None:
        self.closed = True

    def lost(self) -> None:
        self.closed = True


@dataclass
class Backplane:
    sent: list[tuple[object, ...]] = field(default_factory=list)

    def work_runnable(self) -> None:
        self.sent.append(("runnable",))

    def work_aborted(self, request_id: int, worker_id: int) -> None:
        self.sent.append(("aborted", request_id, worker_id))

    def worker_connected(self, worker_id: int, connected_at: float) -> None:
        self.sent.append(("connected", worker_id))


async def settled() -> None:
    """Let the callbacks the fleet scheduled run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_notices_in_one_turn_fold_into_one_broadcast_and_one_offer() -> None:
    """Many runnable notices in one turn of the loop cost one broadcast and one offer per idle connection."""
    backplane = Backplane()
    fleet = Fleet(backplane)
    idle, busy = Link(1), Link(2, free=False)
    fleet.add(idle)
    fleet.add(busy)
    backplane.sent.clear()
    for _ in range(100):
        fleet.runnable()
    await settled()
    assert (backplane.sent, idle.offers, busy.offers) == ([("runnable",)], 1, 0)


async def test_idle_connections_search_one_after_another() -> None:
    """A round of offers asks one idle connection at a time: the next once the previous search ended."""
    fleet = Fleet(Backplane())
    first, second = Link(1), Link(2)
    fleet.add(first)
    fleet.add(second)
    fleet.offer_idle()
    assert sorted((first.offers, second.offers)) == [0, 1]
    asked, other = (first, second) if first.offers else (second, first)
    asked.searched(found=True)
    assert other.offers == 1


async def test_connection_of_a_kind_that_found_nothing_is_skipped() -> None:
    """In one round, a connection whose worker's metadata matched nothing spares the others of that signature."""
    fleet = Fleet(Backplane())
    links = [Link(n, signature="kind-a") for n in range(1, 4)] + [Link(9, signature="kind-b")]
    for link in links:
        fleet.add(link)
    fleet.offer_idle()
    while asked := [link for link in links if link.waiting]:
        asked[0].searched(found=False, signature=asked[0].signature or "")
    assert sorted((link.signature, link.offers) for link in links) == [
        ("kind-a", 0), ("kind-a", 0), ("kind-a", 1), ("kind-b", 1),
    ]


async def test_notice_during_a_round_runs_another_round_after_it() -> None:
    """Work made runnable while a round runs is offered again once the round ended."""
    fleet = Fleet(Backplane())
    link = Link(1, signature="kind-a")
    fleet.add(link)
    fleet.offer_idle()
    fleet.offer_idle()  # a notice while the first search runs
    assert link.offers == 1
    link.searched(found=False)
    assert link.offers == 2


async def test_remote_runnable_offers_without_broadcasting() -> None:
    """A runnable notice from another process reaches the idle connections here and goes no further."""
    backplane = Backplane()
    fleet = Fleet(backplane)
    link = Link(1)
    fleet.add(link)
    backplane.sent.clear()
    fleet.remote_work_runnable()
    await settled()
    assert (backplane.sent, link.offers) == ([], 1)


async def test_abort_reaches_only_that_workers_connections() -> None:
    """An abort is broadcast and told to the connections of the request's worker alone."""
    backplane = Backplane()
    fleet = Fleet(backplane)
    mine, other = Link(1), Link(2)
    fleet.add(mine)
    fleet.add(other)
    fleet.aborted(7, 1)
    assert (mine.aborts, other.aborts, backplane.sent[-1]) == ([7], [], ("aborted", 7, 1))


def test_newer_connection_closes_older_ones_here_and_is_announced() -> None:
    """A worker's new connection closes its older ones here (not others') and is told to other processes."""
    backplane = Backplane()
    fleet = Fleet(backplane)
    older, other = Link(1), Link(2)
    fleet.add(older)
    fleet.add(other)
    fleet.add(Link(1, connected_at=T0 + timedelta(seconds=1)))
    assert (older.closed, other.closed, backplane.sent[-1]) == (True, False, ("connected", 1))


def test_connection_elsewhere_closes_only_older_ones() -> None:
    """Told of a connection elsewhere, the fleet closes the worker's connections older than it, not newer ones."""
    fleet = Fleet(Backplane())
    link = Link(1)
    fleet.add(link)
    fleet.remote_worker_connected(1, (T0 - timedelta(seconds=1)).timestamp())  # a late notice
    assert not link.closed
    fleet.remote_worker_connected(1, (T0 + timedelta(seconds=1)).timestamp())
    assert link.closed


def test_silent_connections() -> None:
    """Connections not heard from for the given time are silent; one heard since is not."""
    fleet = Fleet(Backplane())
    quiet, chatty = Link(1), Link(2, heard_at=T0 + timedelta(seconds=50))
    fleet.add(quiet)
    fleet.add(chatty)
    assert fleet.silent(T0 + timedelta(seconds=60), 60) == [quiet]


@dataclass(eq=False)
class Listener:
    told: list[tuple[object, ...]] = field(default_factory=list)

    def runnable(self) -> None:
        self.told.append(("runnable",))

    def aborted(self, request_id: int, worker_id: int) -> None:
        self.told.append(("aborted", request_id, worker_id))


@pytest.fixture
async def listener() -> object:
    heard = Listener()
    push.listen(heard, asyncio.get_running_loop())
    yield heard
    push.unlisten(heard)


async def test_submission_told_after_commit(listener: Listener) -> None:
    """A new request is announced runnable once its transaction commits, and not before."""
    with transaction.atomic():
        submit("noop")
        await settled()
        assert listener.told == []
    await settled()
    assert listener.told == [("runnable",)]


async def test_rolled_back_submission_not_told(listener: Listener) -> None:
    """A request whose transaction rolled back is never announced."""
    with pytest.raises(RuntimeError), transaction.atomic():
        submit("noop")
        raise RuntimeError("rolled back")
    await settled()
    assert listener.told == []


async def test_abort_of_running_request_names_its_worker(listener: Listener) -> None:
    """Aborting a running request tells its worker; aborting a pending one tells nobody."""
    on = worker()
    busy, waiting = running(on=on), pending()
    await settled()
    listener.told.clear()
    assert abort(busy.pk) and abort(waiting.pk)
    await settled()
    assert listener.told == [("aborted", busy.pk, on.pk)]


async def test_only_success_makes_dependents_runnable(listener: Listener) -> None:
    """A completion with success is announced runnable; one with failure is not (its dependents end)."""
    failed, succeeded = running(), running()
    pending(dependencies=[failed.pk])
    pending(dependencies=[succeeded.pk])
    await settled()
    listener.told.clear()
    assert complete(failed.pk, "failure")
    await settled()
    assert listener.told == []
    assert complete(succeeded.pk, "success")
    await settled()
    assert listener.told == [("runnable",)]


async def test_success_without_dependents_not_told(listener: Listener) -> None:
    """A completion that leaves nothing newly runnable causes no fleet-wide round of searches."""
    alone = running()
    await settled()
    listener.told.clear()
    assert complete(alone.pk, "success")
    await settled()
    assert listener.told == []


async def test_worker_check_round_asks_every_idle_connection() -> None:
    """The worker check's round asks even a connection whose (perhaps stale) signature found nothing."""
    fleet = Fleet(Backplane())
    links = [Link(1, signature="kind-a"), Link(2, signature="kind-a")]
    for link in links:
        fleet.add(link)
    fleet.offer_idle(every=True)
    while asked := [link for link in links if link.waiting]:
        asked[0].searched(found=False)
    assert [link.offers for link in links] == [1, 1]


async def test_worker_check_round_replaces_a_round_that_never_heard_back() -> None:
    """A round waiting for ever on one connection is replaced by the worker check's, which asks the others."""
    fleet = Fleet(Backplane())
    stuck, other = Link(1), Link(2)
    fleet.add(stuck)
    fleet.add(other)
    fleet.offer_idle()
    first, second = (stuck, other) if stuck.offers else (other, stuck)
    first.waiting.clear()  # its answer never comes
    fleet.offer_idle()  # a notice: it only waits for the stuck round
    assert second.offers == 0
    fleet.offer_idle(every=True)
    while asked := [link for link in (first, second) if link.waiting]:
        asked[0].searched(found=False)
    assert (first.offers, second.offers) == (2, 1)
