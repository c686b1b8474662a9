"""How many topics a principal may create: counted in the database (the topics it created that
still exist), so the limits hold across processes and restarts. Call inside the transaction that
creates the topic."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from app.auth.services import ANONYMOUS_PRINCIPAL
from app.broker.models import Topic
from app.broker.permissions import guardian_user


def creator(principal: str, address: str) -> str:
    """Whom a creation counts against: the principal, or for anonymous clients (all one principal)
    their address, so one anonymous client cannot use up every anonymous client's quota."""
    return f"{principal}@{address}"[:64] if principal == ANONYMOUS_PRINCIPAL else principal


def creating_principal(created_by: str) -> str:
    """The principal behind a ``Topic.created_by`` key (``creator``'s inverse): anonymous clients
    are counted per address, but they are one principal, with one set of rights."""
    return ANONYMOUS_PRINCIPAL if created_by.startswith(f"{ANONYMOUS_PRINCIPAL}@") else created_by


def hold_principal(user: Any) -> None:
    """Serialise the creations of one principal until the commit, or two processes would both pass
    its count: PostgreSQL locks its user row (the anonymous principal has one too); SQLite runs
    one write transaction at a time already (IMMEDIATE)."""
    holder = guardian_user(user)
    # NO KEY UPDATE: messages referencing the user (their producer) are not held up.
    list(get_user_model().objects.select_for_update(no_key=True).filter(pk=holder.pk).values_list("pk", flat=True))


def topic_quota_error(principal: str) -> str | None:
    limit = settings.TOPICS_PER_PRINCIPAL
    if Topic.objects.source_topics().filter(created_by=principal).count() >= limit:
        return f"topic limit reached: {principal} has created {limit} topics, the most allowed"
    return None


def response_topic_quota_error(principal: str) -> str | None:
    limit = settings.RESPONSE_TOPICS_PER_PRINCIPAL
    if Topic.objects.response_topics().filter(created_by=principal).count() >= limit:
        return f"response topic limit reached: {principal} has {limit} response topics, the most allowed"
    return None


def connection_quota_error(created: int) -> str | None:
    """``created``: response topics this connection created that still exist."""
    limit = settings.RESPONSE_TOPICS_PER_CONNECTION
    if created >= limit:
        return f"response topic limit reached: this connection created {limit}, the most allowed"
    return None


def existing(topic_ids: set[int]) -> set[int]:
    """Which of these topics still exist (garbage collection removes response topics)."""
    return set(Topic.objects.filter(pk__in=list(topic_ids)).values_list("pk", flat=True))
