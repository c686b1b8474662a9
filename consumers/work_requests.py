"""``/ws/work-requests/[?completed_since=&task_name=&mine=]``: the requests that ended since
``completed_since`` (``replayed``), then every change as it happens, then nothing is read from the
client (docs/architecture.md section 19, who sees what: app/work/watching.py).

Order of a connection: join the feed and wait for a read of it (changes committed from then on
reach this socket; they are held meanwhile), send the replay page by page as the send queue has
room, wait for another read (the changes committed during the replay are held too), send the held
changes of requests the replay did not send, then ``synced``; from there changes go straight out.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone
from pydantic import ValidationError

from app import codec
from app.broker.admission import Refusal
from app.broker.runtime import get_runtime
from app.pulsar.params import params_problem
from app.work.changes import replay_page
from app.work.feed import LiveChange, WorkFeed
from app.work.watching import FeedParams, ReplayMerge, WatchScope, scope_for, sees_every_request
from consumers.base import FrameConsumer
from consumers.frames import WorkRequestFrame, WorkRequestsSyncedFrame
from consumers.outbound import frame_size

ANONYMOUS = "watching work requests needs a token or a logged-in session"
REPLAY_PAGE = 500


class WorkRequestsConsumer(FrameConsumer):

    metrics_kind = "work_requests"

    def __init__(self) -> None:
        super().__init__()
        self.feed: WorkFeed | None = None
        self.watch = WatchScope(None, None)
        self.merge: ReplayMerge[LiveChange] = ReplayMerge(0, timezone.now())

    async def before_accept(self) -> Refusal | None:
        try:
            self.params = FeedParams.from_query(self.scope.get("query_string", b""))
        except ValidationError as exc:
            return Refusal(HTTPStatus.BAD_REQUEST, params_problem(exc))
        if not getattr(self.user, "is_authenticated", False):
            return Refusal(HTTPStatus.UNAUTHORIZED, self.scope.get("auth_error") or ANONYMOUS)
        every = await database_sync_to_async(sees_every_request)(self.user)
        self.watch = scope_for(self.user.pk, every, self.params)
        return None

    async def on_connect(self) -> None:
        # Held changes are bounded like a send queue: a watcher that cannot take that many is too slow.
        self.merge = ReplayMerge(settings.SEND_QUEUE_FRAMES, timezone.now())
        self.feed = get_runtime().work_feed
        self.feed.add(self)
        self.spawn(self._start())

    async def _start(self) -> None:
        assert self.feed is not None
        await self.feed.catch_up()
        replayed = 0
        if self.params.completed_since is not None:
            replayed = await self._replay(self.params.completed_since)
            await self.feed.catch_up()
        if self.closing:
            return
        for change in self.merge.release():
            self._send(change)
        self.push_model(WorkRequestsSyncedFrame(type="synced", replayed=replayed))

    async def _replay(self, since: datetime) -> int:
        """Send the requests that ended since ``since``, oldest first; how many."""
        size = max(1, min(REPLAY_PAGE, settings.SEND_QUEUE_FRAMES // 2))
        after: tuple[datetime, int] | None = None
        sent = 0
        while not self.closing and self.outbound is not None:
            page = await database_sync_to_async(replay_page)(since, self.watch, after, size)
            texts = [codec.dump_model(WorkRequestFrame.replay(state)) for state in page]
            await self.outbound.wait_room(len(texts), sum(frame_size(text) for text in texts))
            for state, text in zip(page, texts, strict=True):
                self.merge.replayed(state)
                self.push(text)
            sent += len(page)
            if len(page) < size:
                break
            last = page[-1]
            assert last.completed_at is not None  # ended requests have one
            after = (last.completed_at, last.id)
        return sent

    def take(self, change: LiveChange) -> None:
        """A change from the feed (app/work/feed.py)."""
        if self.closing or not self.watch.shows(change.event):
            return
        if not self.merge.holding:
            self._send(change)
        elif not self.merge.hold(change.event.id, change):
            self.too_slow(f"more than {self.merge.limit} changes held back during the replay")

    def _send(self, change: LiveChange) -> None:
        if change.text is None:
            change.text = codec.dump_model(WorkRequestFrame.live(change.event))
        self.push(change.text)

    async def on_frame(self, raw: dict[str, Any]) -> None:
        self.refuse("work request sockets only send; nothing is read from them", raw)

    async def on_disconnect(self) -> None:
        if self.feed is not None:
            self.feed.remove(self)
