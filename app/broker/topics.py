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
