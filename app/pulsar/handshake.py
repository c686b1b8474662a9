"""Handshake refusals on the Pulsar paths, decided before the socket is accepted
(docs/architecture.md 18.2). Plain decisions: the consumer classes look the topic up and send the
refusal."""

from __future__ import annotations

import enum
from http import HTTPStatus

from app.broker.admission import Refusal
from app.broker.naming import shown
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


def subscription_conflict(name: str, wanted: str, attached_type: str, attached: int) -> Refusal | None:
    """409 when a consumer asking for subscription type ``wanted`` may not join ``attached``
    consumers of type ``attached_type`` in this process: another type, or a second Exclusive one."""
    if attached == 0:
        return None
    if wanted != attached_type:
        return Refusal(HTTPStatus.CONFLICT, f"subscription {shown(name)} has {attached_type} consumers; "
                                            f"subscriptionType {wanted} refused")
    if wanted == "Exclusive":
        return Refusal(HTTPStatus.CONFLICT, f"exclusive subscription {shown(name)} already has a consumer")
    return None


def subscription_owner_refusal(name: str, owner: str, principal: str, superuser: bool) -> Refusal | None:
    """403 when ``principal`` may not attach to subscription ``name``: a subscription belongs to the
    principal that created it (``owner``; every anonymous client is the one principal "anonymous",
    so they share theirs). Superusers may attach to any; a subscription without a recorded creator
    is anyone's."""
    if not owner or owner == principal or superuser:
        return None
    return Refusal(HTTPStatus.FORBIDDEN, f"subscription {shown(name)} belongs to another principal")
