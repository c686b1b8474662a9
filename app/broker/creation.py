"""Topics that come into being through clients: auto-created on a first message, response topics
named by a request, the outbox's event topics; and a response topic an admin claims.

Names and per-principal limits are checked here, in the creating transaction.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from app.auth.services import principal_of
from app.broker.models import Message, Topic
from app.broker.naming import response_topic_name_error, shown, topic_name_error
from app.broker.permissions import grant, revoke_all, rights_on
from app.broker.quotas import connection_quota_error, hold_principal, response_topic_quota_error, topic_quota_error
from app.broker.services import TopicError


def create_topic(slug: str, owner: Any) -> tuple[Topic, bool]:
    """Auto-create a topic on its first message; its creator may produce to and consume it.
    Returns the topic and whether this call created it (a racing creator may have won)."""
    reason = topic_name_error(slug)
    if reason is not None:
        raise TopicError(reason)
    principal = principal_of(owner)
    with transaction.atomic():
        existing = Topic.objects.filter(slug=slug).first()
        if existing is not None:
            return existing, False
        hold_principal(owner)
        reason = topic_quota_error(principal)
        if reason is not None:
            raise TopicError(reason)
        topic, created = Topic.objects.get_or_create(slug=slug, defaults={"created_by": principal})
        if created:
            grant(owner, topic, "can_produce", "can_consume")
    return topic, created


def ensure_response_topic(source_id: int, source_slug: str, slug: str, requester: Any,
                          created_here: int, creator: str) -> tuple[int, bool]:
    """The response topic named by a request, created before the request is acknowledged.

    Only the requester may consume it; consumers of the source topic may produce to it. Nobody
    attached yet, so it is collected ``RESPONSE_TOPIC_UNATTACHED_TTL_S`` later unless a consumer
    attaches. ``created_here``: response topics the requesting connection created that still exist;
    ``creator``: whom the creation counts against (quotas.creator). An existing response topic may
    be named only by whoever may consume it: nobody sends responses into another's topic.
    Returns its id and whether it was created now.
    """
    reason = response_topic_name_error(source_slug, slug)
    if reason is not None:
        raise TopicError(reason)
    principal = creator
    with transaction.atomic():
        topic = Topic.objects.filter(slug=slug).first()
        created = False
        if topic is None:
            reason = connection_quota_error(created_here)
            if reason is None:
                hold_principal(requester)
                reason = response_topic_quota_error(principal)
            if reason is not None:
                raise TopicError(reason)
            collect_on = timezone.now() + timedelta(seconds=settings.RESPONSE_TOPIC_UNATTACHED_TTL_S)
            topic, created = Topic.objects.get_or_create(slug=slug, defaults={
                "response_for_id": source_id, "is_public": False, "supports_dasf": True,
                "created_by": principal, "garbage_collect_on": collect_on,
            })
            if created:
                grant(requester, topic, "can_consume")
    if topic.response_for_id is None:
        raise TopicError(f"{shown(slug)} is a topic of its own, not a response topic")
    if topic.response_for_id != source_id:
        raise TopicError(f"response topic {shown(slug)} belongs to another topic")
    if not created and not rights_on(requester, topic).consume:
        raise TopicError(f"response topic {shown(slug)} belongs to another requester")
    return topic.pk, created


def ensure_event_topic(slug: str) -> Topic:
    """The topic outbox events are published to, created when missing: private (consumers need a
    grant) and not a DASF module (nobody answers pings on it)."""
    reason = topic_name_error(slug)
    if reason is not None:
        raise TopicError(f"{reason} (for events)")
    topic, _ = Topic.objects.get_or_create(slug=slug, defaults={"supports_dasf": False})
    if topic.response_for_id is not None:
        raise TopicError(f"{slug} is a response topic")
    return topic


def convert_response_topic(topic: Topic) -> None:
    """Make a response topic a topic of its own (an admin claims its name). Nothing of its
    requester's carries over: every grant on it, its stored responses and its link to the source
    go. The caller saves the topic."""
    revoke_all([topic.pk])
    Message.objects.filter(topic=topic).delete()
    Message.objects.filter(response_topic=topic).update(response_topic=None)
    topic.response_for = None
    topic.garbage_collect_on = None
    topic.created_by = ""
