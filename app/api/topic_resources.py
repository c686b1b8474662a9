"""Topics as resources over HTTP: list, create, get, update, delete.

A caller sees the topics ``rights_on`` lets it see (public, or any right held; superusers all);
any other answers 404 exactly like a missing one. Creating needs ``broker.add_topic`` (and counts
against ``TOPICS_PER_PRINCIPAL``; the creator may produce and consume); changing a topic's
settings ``broker.change_topic``; deleting ``broker.delete_topic`` (superusers have all). Saving
or deleting a topic and its grants announces the change (app/broker/signals.py), so open sockets
re-read their rights.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from app.api.auth import request_user, require_permission
from app.api.examples import responses
from app.api.pagination import PageOut, PageParams, keyset_page
from app.auth.services import principal_of
from app.availability.rules import Availability
from app.broker.models import Topic, TopicQuerySet
from app.broker.naming import response_topic_sources, shown, topic_name_error
from app.broker.permissions import Rights, grant, revoke_all, rights_on, visible_topics
from app.broker.policy import StorePolicy
from app.broker.quotas import hold_principal, topic_quota_error

router = Router(tags=["topics"])


class TopicOut(Schema):
    name: str
    public: bool = Field(description="everyone may publish")
    supports_dasf: bool = Field(description="consumers answer DASF ping / api_info")
    store_messages: StorePolicy | None = Field(description="the topic's own store policy; null: server default")
    policy: StorePolicy = Field(description="the store policy in force")
    response_for: str | None = Field(description="the source topic, for a response topic")
    availability: Availability
    last_ping: datetime | None
    last_pong: datetime | None
    created: datetime


class TopicPage(PageOut):
    items: list[TopicOut]


class TopicFilter(PageParams):
    prefix: str | None = Field(None, description="names starting with this")
    dasf: bool | None = Field(None, description="supports_dasf")
    public: bool | None = None
    policy: StorePolicy | None = Field(None, description="the store policy in force")
    response: bool | None = Field(None, description="true: response topics only; false: none")
    availability: Availability | None = None


class TopicIn(Schema):
    name: str = Field(description="letters, digits, '-' and '_', at most TOPIC_NAME_MAX_CHARS")
    # Other than the defaults these need broker.change_topic, as changing them later does.
    public: bool = False
    supports_dasf: bool = True
    store_messages: StorePolicy | None = None


class TopicChange(Schema):
    public: bool | None = None
    supports_dasf: bool | None = None
    store_messages: StorePolicy | None = Field(None, description="null: the server default")


TOPIC_EXAMPLE = {
    "name": "sensors-7", "public": False, "supports_dasf": True, "store_messages": None, "policy": "cache",
    "response_for": None, "availability": "online", "last_ping": "2025-05-01T12:00:00Z",
    "last_pong": "2025-05-01T12:00:00.020Z", "created": "2025-04-30T08:15:00Z",
}


def topic_out(topic: Topic, now: datetime) -> TopicOut:
    source = topic.response_for
    return TopicOut(
        name=topic.slug, public=topic.is_public, supports_dasf=topic.supports_dasf,
        store_messages=StorePolicy(topic.store_messages) if topic.store_messages else None,
        policy=topic.policy, response_for=source.slug if source is not None else None,
        availability=topic.availability(now), last_ping=topic.last_ping, last_pong=topic.last_pong,
        created=topic.created,
    )


def visible_topic(slug: str, user: Any) -> tuple[Topic, Rights]:
    """The topic ``slug`` and ``user``'s rights on it, for any API operation on one topic; 404 alike
    whether it is missing or hidden from the caller, so the answer tells nobody which private topics exist."""
    # No topic's name holds NUL (nor may PostgreSQL be asked for one).
    topic = None if "\x00" in slug else Topic.objects.select_related("response_for").filter(slug=slug).first()
    if topic is not None:
        rights = rights_on(user, topic)
        if rights.view_status:
            return topic, rights
    raise HttpError(404, f"topic {slug} does not exist")


def _policy_q(policy: StorePolicy) -> Q:
    """Topics whose policy in force is ``policy``: their own, else the default for their kind."""
    matches = Q(store_messages=policy.value)
    unset = Q(store_messages__isnull=True) | Q(store_messages="")
    if settings.STORE_SOURCE_MESSAGES == policy.value:
        matches |= unset & Q(response_for__isnull=True)
    if settings.STORE_RESPONSE_MESSAGES == policy.value:
        matches |= unset & Q(response_for__isnull=False)
    return matches


def _filtered(rows: TopicQuerySet, filters: TopicFilter, now: datetime) -> TopicQuerySet:
    if filters.prefix:
        rows = rows.filter(slug__startswith=filters.prefix)
    if filters.dasf is not None:
        rows = rows.filter(supports_dasf=filters.dasf)
    if filters.public is not None:
        rows = rows.filter(is_public=filters.public)
    if filters.policy is not None:
        rows = rows.filter(_policy_q(filters.policy))
    if filters.response is not None:
        rows = rows.filter(response_for__isnull=not filters.response)
    # As Topic.availability: a topic that is not supports_dasf is never pinged, so unknown.
    if filters.availability is Availability.ONLINE:
        rows = rows.filter(supports_dasf=True).online(now)
    elif filters.availability is Availability.OFFLINE:
        rows = rows.filter(supports_dasf=True).offline(now)
    elif filters.availability is Availability.UNKNOWN:
        rows = rows.filter(Q(supports_dasf=False) | Q(pk__in=Topic.objects.unknown(now).values("pk")))
    return rows


def _list(request: HttpRequest, user: Any, filters: TopicFilter) -> TopicPage:
    now = timezone.now()
    rows = _filtered(visible_topics(user).select_related("response_for"), filters, now)
    page = keyset_page(request, rows, "slug", filters)
    return TopicPage(items=[topic_out(t, now) for t in page.rows], next_cursor=page.next_cursor, next=page.next)


def _create(user: Any, body: TopicIn) -> TopicOut:
    require_permission(user, "broker.add_topic")
    if (body.public, body.supports_dasf, body.store_messages) != (False, True, None) and not user.has_perm(
        "broker.change_topic"
    ):
        raise HttpError(403, "settings other than the defaults need the broker.change_topic permission")
    reason = topic_name_error(body.name)
    if reason is not None:
        raise HttpError(422, reason)
    if not user.has_perm("broker.change_topic") and Topic.objects.filter(
        slug__in=response_topic_sources(body.name)
    ).exists():
        # Requests create their response topics under these names: nobody may squat one.
        raise HttpError(422, f"{shown(body.name)} is named like a response topic of an existing topic")
    principal = principal_of(user)
    try:
        with transaction.atomic():
            hold_principal(user)
            reason = None if user.is_superuser else topic_quota_error(principal)
            if reason is not None:
                raise HttpError(403, reason)
            topic = Topic.objects.create(
                slug=body.name, is_public=body.public, supports_dasf=body.supports_dasf,
                store_messages=body.store_messages.value if body.store_messages else None, created_by=principal,
            )
            grant(user, topic, "can_produce", "can_consume")
    except IntegrityError:
        raise HttpError(409, f"topic {body.name} exists") from None
    return topic_out(topic, timezone.now())


def _get(user: Any, slug: str) -> TopicOut:
    topic, _ = visible_topic(slug, user)
    return topic_out(topic, timezone.now())


def _update(user: Any, slug: str, change: TopicChange) -> TopicOut:
    topic, _ = visible_topic(slug, user)
    require_permission(user, "broker.change_topic")
    if topic.is_response_topic:
        raise HttpError(409, f"{slug} is a response topic; its settings follow its source")
    given = change.model_fields_set
    if "public" in given and change.public is not None:
        topic.is_public = change.public
    if "supports_dasf" in given and change.supports_dasf is not None:
        topic.supports_dasf = change.supports_dasf
    if "store_messages" in given:
        topic.store_messages = change.store_messages.value if change.store_messages else None
    # save() announces the change: every socket on the topic re-reads its rights.
    topic.save(update_fields=["is_public", "supports_dasf", "store_messages"])
    return topic_out(topic, timezone.now())


def _delete(user: Any, slug: str) -> None:
    topic, _ = visible_topic(slug, user)
    require_permission(user, "broker.delete_topic")
    with transaction.atomic():
        # guardian keeps grants by primary key: they go with the topic and its response topics.
        revoke_all([topic.pk, *topic.response_topics.values_list("pk", flat=True)])
        topic.delete()


LIST_DOCS = responses(200, {"items": [TOPIC_EXAMPLE], "next_cursor": "WyIvYXBpL3YxL3RvcGljcyIsInNlbnNvcnMtNyJd",
                            "next": "/api/v1/topics?limit=1&cursor=WyIvYXBpL3YxL3RvcGljcyIsInNlbnNvcnMtNyJd"},
                      401, 422)
CREATE_DOCS = responses(201, TOPIC_EXAMPLE, 400, 401, 403, 409, 422,
                        request={"name": "sensors-7", "public": False, "supports_dasf": True, "store_messages": None})
GET_DOCS = responses(200, TOPIC_EXAMPLE, 401, 404, 422)
UPDATE_DOCS = responses(200, {**TOPIC_EXAMPLE, "store_messages": "store", "policy": "store"},
                        400, 401, 403, 404, 409, 422, request={"store_messages": "store"})
DELETE_DOCS = responses(204, None, 401, 403, 404, 422)


@router.get("/topics", response={200: TopicPage, **LIST_DOCS[0]}, openapi_extra=LIST_DOCS[1],
            summary="List the topics you may see (by name, cursor-paginated)")
async def list_topics(request: HttpRequest, filters: Query[TopicFilter]) -> TopicPage:
    page: TopicPage = await sync_to_async(_list)(request, request_user(request), filters)
    return page


@router.post("/topics", response={201: TopicOut, **CREATE_DOCS[0]}, openapi_extra=CREATE_DOCS[1],
             summary="Create a topic (you may then produce to and consume it)")
async def create_topic(request: HttpRequest, body: TopicIn) -> tuple[int, TopicOut]:
    topic: TopicOut = await sync_to_async(_create)(request_user(request), body)
    return 201, topic


@router.get("/topics/{slug}", response={200: TopicOut, **GET_DOCS[0]}, openapi_extra=GET_DOCS[1],
            summary="One topic")
async def get_topic(request: HttpRequest, slug: str) -> TopicOut:
    topic: TopicOut = await sync_to_async(_get)(request_user(request), slug)
    return topic


@router.patch("/topics/{slug}", response={200: TopicOut, **UPDATE_DOCS[0]}, openapi_extra=UPDATE_DOCS[1],
              summary="Change a topic's settings (public, supports_dasf, store_messages)")
async def update_topic(request: HttpRequest, slug: str, change: TopicChange) -> TopicOut:
    topic: TopicOut = await sync_to_async(_update)(request_user(request), slug, change)
    return topic


@router.delete("/topics/{slug}", response={204: None, **DELETE_DOCS[0]}, openapi_extra=DELETE_DOCS[1],
               summary="Delete a topic, its messages and its response topics")
async def delete_topic(request: HttpRequest, slug: str) -> tuple[int, None]:
    await sync_to_async(_delete)(request_user(request), slug)
    return 204, None
