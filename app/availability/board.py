"""This process's status viewers, indexed by topic, and the last status each topic was shown with
(no I/O; callers pass the time).

A status read less than ``max_age`` ago is served from here, so many viewers opening at once (a
dashboard reloaded everywhere, or a flood of idle sockets) cost one query, not one each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from app.availability.api_info import ApiSummary
from app.availability.services import TopicStatus


class Viewer(Protocol):
    def show(self, status: TopicStatus) -> None: ...


class SentApis:
    """One viewer's record of the API it was last sent per topic: every ping round moves every topic's
    times, and the API (up to ~5 KB of names) must not ride along each time when it did not change."""

    def __init__(self) -> None:
        self._sent: dict[str, ApiSummary | None] = {}

    def news(self, status: TopicStatus) -> bool:
        """Whether ``status`` must carry its API (the topic's first status for this viewer, or a
        different API than the one sent last); if so it counts as sent from now on."""
        if status.slug in self._sent and self._sent[status.slug] == status.api:
            return False
        self._sent[status.slug] = status.api
        return True

    def forget(self, slug: str) -> None:
        """The topic is gone from the viewer: should it come back, its first status carries the API again."""
        self._sent.pop(slug, None)


class StatusBoard:
    def __init__(self) -> None:
        self._viewers: dict[str, set[Viewer]] = {}
        self._watching: dict[Viewer, frozenset[str]] = {}
        # slug -> (the status last shown, when it was read); kept after the last viewer leaves, for
        # ``recent`` (bounded by the number of topics).
        self._shown: dict[str, tuple[TopicStatus, float]] = {}

    @property
    def viewers(self) -> int:
        return len(self._watching)

    def watched(self) -> set[str]:
        """Slugs some local viewer wants (the refresh loop reads only these)."""
        return set(self._viewers)

    def recent(self, slugs: Iterable[str], now: float, max_age_s: float) -> tuple[list[TopicStatus], set[str]]:
        """The statuses read within ``max_age_s``, and the slugs that need reading."""
        found: list[TopicStatus] = []
        missing: set[str] = set()
        for slug in slugs:
            entry = self._shown.get(slug)
            if entry is not None and now - entry[1] < max_age_s:
                found.append(entry[0])
            else:
                missing.add(slug)
        return found, missing

    def watch(self, viewer: Viewer, slugs: Iterable[str]) -> None:
        """``viewer`` wants exactly ``slugs`` from now on."""
        self.unwatch(viewer)
        wanted = frozenset(slugs)
        self._watching[viewer] = wanted
        for slug in wanted:
            self._viewers.setdefault(slug, set()).add(viewer)

    def unwatch(self, viewer: Viewer) -> None:
        for slug in self._watching.pop(viewer, ()):
            viewers = self._viewers.get(slug)
            if viewers is not None:
                viewers.discard(viewer)
                if not viewers:
                    del self._viewers[slug]

    def update(self, status: TopicStatus, now: float) -> bool:
        """Record a fresh status; viewers hear of it only when something they show changed (the
        availability, a ping or pong time, the announced API): a wall screen must not show a last
        pong of hours ago while pongs arrive every round."""
        before = self._shown.get(status.slug)
        self._shown[status.slug] = (status, now)
        if before is not None and _shown_alike(before[0], status):
            return False
        for viewer in list(self._viewers.get(status.slug, ())):
            viewer.show(status)
        return True


def _shown_alike(a: TopicStatus, b: TopicStatus) -> bool:
    return (a.status, a.last_ping, a.last_pong, a.api) == (b.status, b.last_ping, b.last_pong, b.api)
