"""Who may watch which work requests on ``/ws/work-requests/``, and how the replay from
``completed_since`` meets the live changes without a gap or a repeat (plain rules, no I/O but
the permission lookup).

- Anonymous clients are refused. A user with the model permission ``work.view_workrequest``
  (superusers have it) sees every request; any other user sees the requests they created. ``mine``
  narrows a viewer to their own too, ``task_name`` to one task. Checked at the handshake: a
  permission taken away later applies from the next connection (a disabled token or deactivated
  user closes the socket at once, as every socket).
- The boundary (``ReplayMerge``): live changes are held back while the replay is read and sent;
  then those of requests the replay sent are dropped and the rest go out in the order they came.
  A replayed request is final (completed or aborted never change again), so a live change of it is
  its final change again or an older one: either way it would repeat or contradict the replay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BeforeValidator, Field, field_validator

from app.pulsar.params import QueryParams
from app.work.access import VIEW_REQUEST, holds
from app.work.events import WorkRequestState

# A replayed request may come again live only if it ended after the watcher joined the feed, less
# the length of the transaction that ended it and the clocks' difference between servers: this
# bounds both (a longer transaction also outlives the feed's hole tracking, relays/work_feed.py).
OVERLAP_S = 60.0

# "+01:00" unescaped in a query string reads as " 01:00" (a "+" is a space there).
_SPACED_OFFSET = re.compile(r"(.*\d) (\d\d(?::?\d\d)?)")


def _offset_plus(value: object) -> object:
    if isinstance(value, str) and (found := _SPACED_OFFSET.fullmatch(value)):
        return f"{found[1]}+{found[2]}"
    return value


class FeedParams(QueryParams):
    """``/ws/work-requests/`` query parameters: what to replay and which requests to show."""

    completed_since: Annotated[datetime | None, BeforeValidator(_offset_plus)] = Field(
        None, description="Replay the requests completed or aborted at or after this time (ISO 8601; "
                          "without an offset, UTC), oldest first, before the live changes.")
    task_name: str | None = Field(None, min_length=1, max_length=100,
                                  description="Only requests of this task.")
    mine: bool = Field(False, description="Only requests the caller created (always so without the "
                                          "work.view_workrequest permission).")

    @field_validator("completed_since")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True, slots=True)
class WatchScope:
    """The requests one watcher is shown."""

    creator_id: int | None  # None: every creator's
    task_name: str | None

    def shows(self, state: WorkRequestState) -> bool:
        return (self.creator_id is None or state.created_by == self.creator_id) and (
            self.task_name is None or state.task_name == self.task_name
        )

    def where(self) -> dict[str, Any]:
        """The same, as ORM filters on WorkRequest."""
        where: dict[str, Any] = {}
        if self.creator_id is not None:
            where["created_by_id"] = self.creator_id
        if self.task_name is not None:
            where["task_name"] = self.task_name
        return where


def sees_every_request(user: Any) -> bool:
    """Whether ``user`` may watch every creator's requests: the rule of app/work/access.py, as the
    HTTP list applies it (reads permissions: on a database thread)."""
    return holds(user, VIEW_REQUEST)


def scope_for(user_id: int, sees_every: bool, params: FeedParams) -> WatchScope:
    return WatchScope(None if sees_every and not params.mine else user_id, params.task_name)


T = TypeVar("T")


class ReplayMerge(Generic[T]):
    """A watcher's live changes while its replay is under way (no I/O)."""

    def __init__(self, limit: int, joined_at: datetime) -> None:
        self.limit = limit
        self.overlap_from = joined_at - timedelta(seconds=OVERLAP_S)
        self.holding = True
        self._held: list[tuple[int, T]] = []
        # Replayed requests that could come again live: only those that ended lately.
        self._replayed: set[int] = set()

    def hold(self, request_id: int, change: T) -> bool:
        """Keep a live change until the replay is over; False when ``limit`` are held already
        (the watcher does not read fast enough to be worth holding more for)."""
        if len(self._held) >= self.limit:
            return False
        self._held.append((request_id, change))
        return True

    def replayed(self, state: WorkRequestState) -> None:
        if state.completed_at is not None and state.completed_at >= self.overlap_from:
            self._replayed.add(state.id)

    def release(self) -> list[T]:
        """The replay is over: the held changes of requests it did not send, in their order. From
        now on changes go straight out."""
        released = [change for request_id, change in self._held if request_id not in self._replayed]
        self.holding, self._held, self._replayed = False, [], set()
        return released

