"""Availability services: plain functions on the ORM (called through ``database_sync_to_async``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from app.availability.api_info import ApiSummary, summarize
from app.availability.rules import Availability, answered_latest_q, attach_ping_marks_q
from app.broker.models import Topic


@dataclass(frozen=True, slots=True)
class TopicStatus:
    slug: str
    status: Availability
    last_ping: datetime | None
    last_pong: datetime | None
    api_info: Any
    # The names in api_info, for status viewers (made once here, not once per viewer).
    api: ApiSummary | None

    @classmethod
    def of(cls, topic: Topic, now: datetime) -> TopicStatus:
        return cls(topic.slug, topic.availability(now), topic.last_ping, topic.last_pong, topic.api_info,
                   summarize(topic.api_info))


def start_ping_round(now: datetime | None = None) -> list[str]:
    """Mark every DASF source topic as pinged now; the slugs to send the ping to."""
    now = now or timezone.now()
    with transaction.atomic():
        topics = Topic.objects.source_topics().filter(supports_dasf=True)
        slugs = list(topics.values_list("slug", flat=True))
        topics.update(last_ping=now)
    return slugs


def start_attach_pings(topic_ids: Iterable[int], now: datetime | None = None) -> list[str]:
    """Of the given topics, the DASF source topics that did not answer their latest ping (the slugs to
    send a ping to); those pinged at least one ``PING_INTERVAL_S`` ago, or never, are marked as pinged
    now (app/availability/rules.py)."""
    now = now or timezone.now()
    topics = Topic.objects.source_topics().filter(pk__in=list(topic_ids), supports_dasf=True)
    # A topic whose module answered the latest ping needs none: pinging it for every attach would only
    # have each consumer of a busy topic answer a ping every ATTACH_PING_MIN_INTERVAL_S. One whose
    # answer is merely still due is pinged: that ping may have reached only a dead module's socket.
    answered = answered_latest_q(now, window_s=settings.AVAILABILITY_WINDOW_S, grace_s=settings.PONG_GRACE_S)
    topics = topics.exclude(answered)
    slugs = list(topics.values_list("slug", flat=True))
    if slugs:
        topics.filter(attach_ping_marks_q(now, interval_s=settings.PING_INTERVAL_S)).update(last_ping=now)
    return slugs


def ping_topic(topic_id: int, now: datetime | None = None) -> None:
    Topic.objects.filter(pk=topic_id).update(last_ping=now or timezone.now())


def statuses(slugs: Iterable[str] | None = None, now: datetime | None = None) -> list[TopicStatus]:
    """Current availability of the given topics (all when None)."""
    now = now or timezone.now()
    topics = Topic.objects.all() if slugs is None else Topic.objects.filter(slug__in=list(slugs))
    return [TopicStatus.of(t, now) for t in topics.only("slug", "supports_dasf", "last_ping", "last_pong", "api_info")]


def status_of(topic_id: int, now: datetime | None = None) -> TopicStatus:
    return TopicStatus.of(Topic.objects.get(pk=topic_id), now or timezone.now())


def visible_topics(user: Any, only: Iterable[str] | None = None) -> list[str]:
    """Source topics whose status ``user`` may see: public ones, and those it may view, produce
    to or consume (superusers see all)."""
    permitted = get_objects_for_user(
        user,
        ["broker.can_view_status", "broker.can_consume", "broker.can_produce"],
        klass=Topic.objects.source_topics(),
        any_perm=True,
        with_superuser=True,
        accept_global_perms=True,
    )
    topics = Topic.objects.source_topics().filter(Q(is_public=True) | Q(pk__in=permitted.values("pk")))
    if only is not None:
        topics = topics.filter(slug__in=list(only))
    return list(topics.order_by("slug").values_list("slug", flat=True))
