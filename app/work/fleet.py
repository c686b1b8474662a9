"""The workers connected to this server process (sockets of ``/ws/workers/``) and the notices that
reach them: work became runnable somewhere (offer it to the idle ones), a running request was
aborted (tell its worker), the worker connected again elsewhere (close its older connection here).

Notices made here (app/work/push.py, after a commit) are applied here and passed to the other
processes over the backplane; theirs arrive as ``remote_*``. The backplane may drop a message: the
worker check (relays/workers.py) offers waiting work to idle workers every WORKER_CHECK_INTERVAL_S
whatever was heard, and reconciles the connections with the database (a lost ``aborted`` or
``connected`` notice is made good there). No I/O here: each connection does its own database work (and ``offer`` twice
costs one search, the connection folds them).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from app.work.sessions import Believed, Verdict
from app.work.workers import is_lost

logger = logging.getLogger(__name__)


class Link(Protocol):
    """One worker connection, as the fleet sees it."""

    worker_id: int
    connected_at: datetime
    # When the worker last sent anything.
    heard_at: datetime
    # The requests it was given and has not finished, with the run each was given as.
    running: dict[int, int]
    # The signature of the metadata its last search matched against (queue.Search), None before one.
    signature: str | None

    def idle(self) -> bool:
        """Whether it may take more work now (ready, with a free slot; searching counts as idle)."""
        ...

    def offer(self, done: Searched | None = None) -> bool:
        """Look for work for it (soon, once: repeated calls meanwhile fold into one more search); with
        ``done``, call it once that search ended, with whether it took anything. False when it will not
        search (not ready, closing): ``done`` is then never called."""
        ...

    def abort(self, request_id: int) -> None:
        """``request_id`` was aborted: tell the worker, if it runs it on this connection."""
        ...

    def replaced(self) -> None:
        """Its session ended elsewhere (the worker opened a newer connection, or another server took
        it for lost): close this connection."""
        ...

    def lost(self) -> None:
        """Silent for WORKER_LOST_AFTER_S: close it and return what it runs."""
        ...


class Broadcast(Protocol):
    """What carries notices to the other server processes (app/broker/backplane.py)."""

    def work_runnable(self) -> None: ...

    def work_aborted(self, request_id: int, worker_id: int) -> None: ...

    def worker_connected(self, worker_id: int, connected_at: float) -> None: ...


Searched = Callable[["Link", bool], None]


@dataclass
class Round:
    """Idle connections offered work one after another (``Fleet.offer_idle``)."""

    waiting: deque[Link]
    # Whether a connection is spared for the signature of one that found nothing (not in the worker
    # check's rounds: a connection's signature may be stale, an admin having changed its metadata).
    skipping: bool = True
    # Signatures whose search found nothing this round: their other connections are not asked.
    dry: set[str] = field(default_factory=set)
    # The connection whose search the round waits for.
    asked: Link | None = None
    # A notice came during the round: another round follows it.
    again: bool = False


class Fleet:
    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast
        self._links: dict[int, set[Link]] = {}
        self._round: Round | None = None
        # Notices within one turn of the event loop fold into one broadcast and one round of offers:
        # a bulk submission committing 100 requests costs one of each, not 100.
        self._offer_due = False
        self._broadcast_due = False

    def __len__(self) -> int:
        return sum(len(links) for links in self._links.values())

    def links(self) -> Iterator[Link]:
        for links in list(self._links.values()):
            yield from list(links)

    def add(self, link: Link) -> None:
        """A worker connected here: close its older connections, here and elsewhere."""
        self._links.setdefault(link.worker_id, set()).add(link)
        stamp = link.connected_at.timestamp()
        self.broadcast.worker_connected(link.worker_id, stamp)
        self.remote_worker_connected(link.worker_id, stamp)

    def discard(self, link: Link) -> None:
        links = self._links.get(link.worker_id)
        if links is not None:
            links.discard(link)
            if not links:
                del self._links[link.worker_id]

    def has_idle(self) -> bool:
        return any(link.idle() for link in self.links())

    def offer_idle(self, *, every: bool = False) -> None:
        """Every idle connection looks for work, one after another rather than all at once: a
        connection whose worker has the metadata of one that just found nothing is not asked in this
        round (it would find nothing either), so one new request and fifty idle workers of one kind cost
        a search or two, not fifty. Searches run one at a time on the database thread anyway, so taking
        turns costs a bulk submission no throughput. A notice during a round starts another after it.

        ``every`` (the worker check's): ask every idle connection, and start afresh even if a round
        is under way, so a stale signature or a round that never heard back delays work at most one
        WORKER_CHECK_INTERVAL_S."""
        self._offer_due = False
        if self._round is not None and not every:
            self._round.again = True
            return
        self._round = Round(deque(link for link in self.links() if link.idle()), skipping=not every)
        self._next_offer()

    def _next_offer(self) -> None:
        current = self._round
        assert current is not None
        while current.waiting:
            link = current.waiting.popleft()
            if not link.idle() or (current.skipping and link.signature is not None and link.signature in current.dry):
                continue
            current.asked = link
            try:
                if link.offer(self._searched):
                    return
            except Exception:  # one connection's failure must not end offers to the others
                logger.exception("offering work to %r failed", link)
        self._round = None
        if current.again:
            self.offer_idle()

    def _searched(self, link: Link, found: bool) -> None:
        current = self._round
        if current is None or current.asked is not link:
            return  # a round the worker check replaced
        current.asked = None
        if not found and link.signature is not None:
            current.dry.add(link.signature)
        self._next_offer()

    def silent(self, now: datetime, lost_after_s: float) -> list[Link]:
        """The connections whose worker said nothing for ``lost_after_s`` (WORKER_LOST_AFTER_S)."""
        return [link for link in self.links() if is_lost(link.connected_at, link.heard_at, now, lost_after_s)]

    def beliefs(self) -> list[tuple[Link, Believed]]:
        """What each connection believes, for ``sessions.reconcile``."""
        return [(link, Believed(link.worker_id, link.connected_at, frozenset(link.running))) for link in self.links()]

    @staticmethod
    def settle(links: list[Link], verdicts: list[Verdict]) -> None:
        """Act on ``reconcile``'s word: close a connection whose session ended elsewhere, tell one
        of the requests aborted while their notice was lost."""
        for link, verdict in zip(links, verdicts, strict=True):
            if not verdict.current:
                link.replaced()
                continue
            for request_id in sorted(verdict.aborted):
                link.abort(request_id)

    # --- push.Listener: a transaction in this process committed -----------------------------

    def runnable(self) -> None:
        if not self._broadcast_due:
            self._broadcast_due = True
            asyncio.get_running_loop().call_soon(self._broadcast_runnable)
        self.remote_work_runnable()

    def aborted(self, request_id: int, worker_id: int) -> None:
        self.broadcast.work_aborted(request_id, worker_id)
        self.remote_work_aborted(request_id, worker_id)

    def _broadcast_runnable(self) -> None:
        self._broadcast_due = False
        self.broadcast.work_runnable()

    # --- what other processes tell --------------------------------------------------------

    def remote_work_runnable(self) -> None:
        if not self._offer_due:
            self._offer_due = True
            asyncio.get_running_loop().call_soon(self.offer_idle)

    def remote_work_aborted(self, request_id: int, worker_id: int) -> None:
        for link in list(self._links.get(worker_id, ())):
            link.abort(request_id)

    def remote_worker_connected(self, worker_id: int, connected_at: float) -> None:
        for link in list(self._links.get(worker_id, ())):
            if link.connected_at.timestamp() < connected_at:
                link.replaced()
