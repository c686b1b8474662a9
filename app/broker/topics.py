"""What a connection caches about its topic, so no frame needs a topic or permission query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.broker.models import Topic
from app.broker.permissions import Rights, rights_on
from app.broker.policy import StorePolicy
from app.broker.services import get_topic


@dataclass(frozen=True, slots=True)
class TopicView:
    id: int
    slug: str
    policy: StorePolicy
    is_response_topic: bool
    # For a response topic: its source, whose consumers may answer on it.
    source_slug: str | None
    supports_dasf: bool
    rights: Rights

    @classmethod
    def of(cls, topic: Topic, rights: Rights) -> TopicView:
        return cls(
            id=topic.pk,
            slug=topic.slug,
            policy=topic.policy,
            is_response_topic=topic.is_response_topic,
            source_slug=topic.response_for.slug if topic.response_for is not None else None,
            supports_dasf=topic.supports_dasf,
            rights=rights,
        )


def view_topic(slug: str, user: Any) -> TopicView | None:
    """The topic and this user's rights on it, or None when it does not exist."""
    topic = get_topic(slug)
    if topic is None:
        return None
    return TopicView.of(topic, rights_on(user, topic))


class ViewCache:
    """Topic views per (slug, principal), each with its expiry, indexed so that a change to one
    topic drops its views and those of the response topics answering it without a scan (no I/O;
    callers pass the time). Many connections of one principal (a reconnect storm, a fleet of
    modules) need one lookup."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._views: dict[str, dict[str, tuple[TopicView, float]]] = {}
        # source slug -> response slugs with cached views (their produce right comes from it)
        self._answering: dict[str, set[str]] = {}
        self._count = 0

    def get(self, slug: str, principal: str, now: float) -> TopicView | None:
        entry = self._views.get(slug, {}).get(principal)
        return entry[0] if entry is not None and entry[1] > now else None

    def put(self, view: TopicView, principal: str, expires: float) -> None:
        if self._count >= self.max_entries:
            self._views.clear()
            self._answering.clear()
            self._count = 0
        views = self._views.setdefault(view.slug, {})
        self._count += principal not in views
        views[principal] = (view, expires)
        if view.source_slug is not None:
            self._answering.setdefault(view.source_slug, set()).add(view.slug)

    def forget(self, slug: str, principal: str) -> None:
        views = self._views.get(slug)
        if views is not None and views.pop(principal, None) is not None:
            self._count -= 1

    def drop(self, slug: str) -> None:
        """Rights on ``slug`` changed: its views go, and those of response topics answering it."""
        for gone in (slug, *self._answering.pop(slug, ())):
            self._count -= len(self._views.pop(gone, {}))

    def __len__(self) -> int:
        return self._count
