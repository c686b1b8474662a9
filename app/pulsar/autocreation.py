"""What a Pulsar-path handshake naming a missing topic gets, and the topic it may create
(``ALLOW_AUTO_TOPIC_CREATION``, Pulsar's ``allowAutoTopicCreation``; docs/architecture.md 18.4).

Producer and consumer handshakes share both: the decision is a plain function, the creation a
sync service (call it through ``database_sync_to_async``).
"""

from __future__ import annotations

import enum
from typing import Any

from django.db import transaction

from app.broker.models import Topic
from app.broker.naming import topic_name_error
from app.broker.permissions import grant, rights_on
from app.broker.quotas import hold_principal, topic_quota_error
from app.broker.services import TopicError
from app.broker.topics import TopicView
from app.pulsar.handshake import Need


class MissingTopic(enum.Enum):
    CREATE = "create"  # ALLOW_AUTO_TOPIC_CREATION: create it now, with Pulsar semantics
    ON_FIRST_MESSAGE = "on first message"  # accept: today's rule lets the first message create it
    REFUSE = "refuse"  # 404


def missing_topic(need: Need, *, allow_auto: bool, may_add_topics: bool, response_shaped: bool = False) -> MissingTopic:
    """What a handshake on a Pulsar path naming a topic that does not exist gets.

    ``response_shaped``: the name is that of a response topic (``S_<suffix>``) of an existing topic
    ``S``. Such a name is never auto-created: a DASF request to ``S`` creates it, for its requester,
    so whoever made it first could read the responses or refuse them. Its producer is accepted as
    on the DASF path (the module answering opens it once the request made it).

    ``may_add_topics``: today's rule (``CREATE_TOPIC_ON_MESSAGE`` and ``broker.add_topic``, never
    for the anonymous principal) would let this principal's first message create it; that topic is
    a DASF topic, as the same first message makes on the DASF path. A consumer has no first
    message: without auto-creation its handshake is refused (the caller keeps today's wait for a
    DASF requester's response topic, which its request creates)."""
    if response_shaped and need is Need.PRODUCE:
        return MissingTopic.ON_FIRST_MESSAGE
    if allow_auto and not response_shaped:
        return MissingTopic.CREATE
    if need is Need.PRODUCE and may_add_topics:
        return MissingTopic.ON_FIRST_MESSAGE
    return MissingTopic.REFUSE


def create_auto_topic(slug: str, user: Any, creator: str) -> tuple[TopicView, bool]:
    """Create ``slug`` as ``ALLOW_AUTO_TOPIC_CREATION`` does: public (anyone may produce), not
    ``supports_dasf``, the server's default store policy; ``user`` may consume it (the anonymous
    principal too, when it created it). ``creator`` is whom ``TOPICS_PER_PRINCIPAL`` counts it
    against (``quotas.creator``: anonymous callers per client address).

    Returns the topic as ``user`` sees it and whether this call created it (a racing creator may
    have won: its topic stands, with its own flags). Raises ``TopicError`` with a client-facing
    reason for a name that cannot be a topic or a creator over its quota."""
    reason = topic_name_error(slug)
    if reason is not None:
        raise TopicError(reason)
    with transaction.atomic():
        topic = Topic.objects.filter(slug=slug).first()
        created = False
        if topic is None:
            hold_principal(user)
            reason = topic_quota_error(creator)
            if reason is not None:
                raise TopicError(reason)
            topic, created = Topic.objects.get_or_create(
                slug=slug, defaults={"created_by": creator, "is_public": True, "supports_dasf": False}
            )
            if created:
                grant(user, topic, "can_consume")
    return TopicView.of(topic, rights_on(user, topic)), created
