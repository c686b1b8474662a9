"""Who may produce, consume and see the status of a topic (django-guardian object permissions).

These run once per connection (and again when told permissions changed), never per frame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q
from guardian.core import ObjectPermissionChecker
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm, get_objects_for_user, get_users_with_perms
from guardian.utils import get_anonymous_user

from app.auth.services import ANONYMOUS_PRINCIPAL, principal_of
from app.broker.models import Topic, TopicQuerySet


@dataclass(frozen=True, slots=True)
class Rights:
    produce: bool
    consume: bool
    view_status: bool


def rights_on(user: Any, topic: Topic) -> Rights:
    """A user's rights on a topic (and, for a response topic, on its source), in one prefetch."""
    holder = guardian_user(user)
    if not getattr(holder, "is_active", False):
        return Rights(produce=topic.is_public, consume=False, view_status=topic.is_public)
    checker = ObjectPermissionChecker(holder)
    source = topic.response_for
    topics: Any = [topic] if source is None else [topic, source]  # guardian accepts any list of objects
    checker.prefetch_perms(topics)
    consume = checker.has_perm("can_consume", topic)
    produce = topic.is_public or checker.has_perm("can_produce", topic)
    if not produce and source is not None:
        # Whoever may consume the source topic may answer on its response topics, also when the
        # backend module (re)started after the response topic was created.
        produce = checker.has_perm("can_consume", source)
    view = topic.is_public or consume or produce or checker.has_perm("can_view_status", topic)
    return Rights(produce=produce, consume=consume, view_status=view)


def visible_topics(user: Any) -> TopicQuerySet:
    """The topics ``rights_on`` lets this user see, as one query: public ones, those it holds any
    right on, and response topics of topics it may consume (it may answer there)."""
    holder = guardian_user(user)
    if not getattr(holder, "is_active", False):
        return Topic.objects.filter(is_public=True)
    if holder.is_superuser:
        return Topic.objects.all()
    rights = ["broker.can_consume", "broker.can_produce", "broker.can_view_status"]
    held = get_objects_for_user(holder, rights, Topic, any_perm=True, with_superuser=False,
                                accept_global_perms=False)
    consumed = get_objects_for_user(holder, "broker.can_consume", Topic, with_superuser=False,
                                    accept_global_perms=False)
    return Topic.objects.filter(
        Q(is_public=True) | Q(pk__in=held.values("pk")) | Q(response_for__in=consumed.values("pk"))
    )


def may_add_topics(user: Any) -> bool:
    return bool(settings.CREATE_TOPIC_ON_MESSAGE and user.has_perm("broker.add_topic"))


def guardian_user(user: Any) -> Any:
    """guardian stores anonymous grants on a real user row; map Django's AnonymousUser to it."""
    if getattr(user, "is_authenticated", False):
        return user
    return _anonymous_user()


@functools.cache
def _anonymous_user() -> Any:
    # guardian's get_anonymous_user() queries on every call; the row never changes.
    return get_anonymous_user()


def grant(user: Any, topic: Topic, *perms: str) -> None:
    target = guardian_user(user)
    for perm in perms:
        assign_perm(f"broker.{perm}", target, topic)


def revoke_all(topic_ids: list[int]) -> None:
    """Delete every user and group grant on these topics (guardian keeps them by primary key, so
    nothing else removes them with the topic)."""
    topic_type = ContentType.objects.get_for_model(Topic)
    pks = [str(pk) for pk in topic_ids]
    for permissions in (UserObjectPermission, GroupObjectPermission):
        permissions.objects.filter(content_type=topic_type, object_pk__in=pks).delete()


def consumer_principals(topic: Topic) -> set[str]:
    """Principals with explicit consume rights: the set cacheall waits for."""
    users = get_users_with_perms(
        topic, only_with_perms_in=["can_consume"], with_group_users=True, with_superusers=False
    )
    principals = {principal_of(u) for u in users}
    return principals or {ANONYMOUS_PRINCIPAL}
