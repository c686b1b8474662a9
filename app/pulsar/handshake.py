"""Handshake refusals on the Pulsar paths, decided before the socket is accepted
(docs/architecture.md 18.2). Plain decisions: the consumer classes look the topic up and send the
refusal."""

from __future__ import annotations

import enum
from http import HTTPStatus

from app.broker.admission import Refusal
from app.broker.topics import TopicView


class Need(enum.Enum):
    PRODUCE = "publish to"
    CONSUME = "consume"


def topic_refusal(slug: str, topic: TopicView | None, need: Need, auth_error: str | None) -> Refusal | None:
    """Why a handshake on ``slug`` is refused (404 no topic, 401 a bad token where the anonymous
    principal lacks the right, 403 no right), or None."""
    if topic is None:
        return Refusal(HTTPStatus.NOT_FOUND, f"topic {slug} does not exist")
    allowed = topic.rights.produce if need is Need.PRODUCE else topic.rights.consume
    if allowed:
        return None
    if auth_error:
        return Refusal(HTTPStatus.UNAUTHORIZED, auth_error)
    return Refusal(HTTPStatus.FORBIDDEN, f"not allowed to {need.value} this topic")
