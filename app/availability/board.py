"""This process's status viewers and the last status each topic was shown with (no I/O)."""

from __future__ import annotations

from typing import Protocol

from app.availability.services import TopicStatus


class Viewer(Protocol):
    def wants(self, slug: str) -> bool: ...

    def show(self, status: TopicStatus) -> None: ...


class StatusBoard:
    def __init__(self) -> None:
        self.viewers: set[Viewer] = set()
        self._shown: dict[str, TopicStatus] = {}

    def watched(self) -> set[str]:
        """Slugs some local viewer wants (the refresh loop reads only these)."""
        return {slug for slug in self._shown if any(v.wants(slug) for v in self.viewers)}

    def watch(self, viewer: Viewer, current: list[TopicStatus]) -> None:
        self.viewers.add(viewer)
        for status in current:
            self._shown.setdefault(status.slug, status)

    def unwatch(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers:
            self._shown.clear()

    def update(self, status: TopicStatus) -> bool:
        """Record a fresh status; viewers hear of it only when the availability changed."""
        before = self._shown.get(status.slug)
        self._shown[status.slug] = status
        if before is not None and before.status == status.status:
            return False
        for viewer in list(self.viewers):
            if viewer.wants(status.slug):
                viewer.show(status)
        return True
