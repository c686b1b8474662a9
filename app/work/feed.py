"""This process's ``/ws/work-requests/`` watchers and the changes handed to them (no I/O).

relays/work_feed.py reads the outbox while anyone watches and hands each work request change to
``publish``: every watcher is offered it once, and the frame is encoded once for all of them
(``LiveChange``). ``catch_up`` lets a watcher wait until every change committed before it asked
has been handed out: how a new watcher knows it is live, and how its replay meets the live changes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from app.work.events import WorkRequestEvent


@dataclass(slots=True, eq=False)
class LiveChange:
    event: WorkRequestEvent
    # The frame, encoded by the first watcher that sends it and shared by the others.
    text: str | None = None


class Watcher(Protocol):
    def take(self, change: LiveChange) -> None: ...


class WorkFeed:
    def __init__(self) -> None:
        self.watchers: set[Watcher] = set()
        # Set while anyone watches: the loop reads only then.
        self.watched = asyncio.Event()
        # A read is wanted now (a commit here or elsewhere, a watcher catching up, the last one leaving).
        self.wakeup = asyncio.Event()
        self.reads_started = 0
        self._catching_up: list[tuple[int, asyncio.Future[None]]] = []
        self.published = 0

    def add(self, watcher: Watcher) -> None:
        self.watchers.add(watcher)
        self.watched.set()

    def remove(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        if not self.watchers:
            self.watched.clear()
            self.wakeup.set()  # so the loop notices at once and stops reading

    def publish(self, event: WorkRequestEvent) -> None:
        change = LiveChange(event)
        self.published += 1
        for watcher in list(self.watchers):
            watcher.take(change)

    async def catch_up(self) -> None:
        """Return once a read that started after this call has handed out what it found."""
        waiter = asyncio.get_running_loop().create_future()
        entry = (self.reads_started + 1, waiter)
        self._catching_up.append(entry)
        self.wakeup.set()
        try:
            await waiter
        finally:
            if entry in self._catching_up:
                self._catching_up.remove(entry)

    def read_starting(self) -> int:
        """A read begins (called by the loop before it asks the database); its number."""
        self.reads_started += 1
        return self.reads_started

    def read_done(self, number: int) -> None:
        """Read ``number`` was handed out: wake whoever waited for it (or an earlier one)."""
        waiting = []
        for entry in self._catching_up:
            target, waiter = entry
            if target <= number:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append(entry)
        self._catching_up = waiting
