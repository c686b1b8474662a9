"""Outbox events over HTTP: list and inspect, emit, retry dead letters, delete, lag figures.

Reading needs ``outbox.view_outboxevent``, emitting ``outbox.add_outboxevent``, retrying
``outbox.change_outboxevent`` and deleting ``outbox.delete_outboxevent`` (superusers have all).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError
from django.db.models import Q
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from pydantic import ValidationError

from app import codec
from app.api.auth import request_user, require_permission
from app.api.examples import responses
from app.api.instants import UtcDatetime
from app.api.pagination import PageOut, PageParams, keyset_page
from app.broker.permissions import may_add_topics
from app.broker.topics import view_topic
from app.cqrs import events as cqrs_events
from app.cqrs.events import CONTENT_TYPE as CQRS_CONTENT_TYPE
from app.outbox import claims
from app.outbox.cloudevents import EventIn, Extension, TargetName, is_json_type, is_text_type
from app.outbox.emit import TargetNotConfigured, emit_many
from app.outbox.models import OutboxEvent, Status
from app.work import events as work_events

# Sources whose events Switchyard itself writes (app/cqrs/events.py, app/work/events.py).
RESERVED_SOURCES = frozenset({cqrs_events.SOURCE, work_events.SOURCE})

router = Router(tags=["outbox"])


class EventOut(Schema):
    pk: int
    id: str
    specversion: str
    source: str
    type: str
    time: datetime
    subject: str | None
    datacontenttype: str | None
    dataschema: str | None
    data: Any = None
    data_base64: str | None = None
    extensions: dict[str, Extension]
    key: str | None
    target: str
    destination: str
    status: Status
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    published_at: datetime | None


class EventPage(PageOut):
    items: list[EventOut]


class EmitIn(Schema):
    type: str
    source: str
    id: str | None = None
    time: UtcDatetime | None = Field(None, description="when it happened (no offset: UTC)")
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = None
    data_base64: str | None = Field(None, description="binary data, instead of data")
    extensions: dict[str, Extension] = {}
    key: str | None = None
    target: TargetName | None = None
    destination: str = ""


class EventFilter(PageParams):
    status: Status | None = None
    target: str | None = None
    type: str | None = None
    key: str | None = None
    after: int | None = Field(None, description="only events with a larger pk (where to start a walk)")


class Retried(Schema):
    retried: int


class Stats(Schema):
    pending: int
    processing: int
    published: int
    retry: int
    failed: int
    lag_s: float = Field(description="age of the oldest unpublished event")


def event_out(row: OutboxEvent) -> EventOut:
    data: Any = None
    data_base64: str | None = None
    if row.data is not None:
        raw = bytes(row.data)
        if is_json_type(row.datacontenttype):
            try:
                data = codec.loads(raw)
            except codec.DecodeError:  # bytes emitted from Python under a JSON type: show them as they are
                data_base64 = base64.b64encode(raw).decode()
        elif is_text_type(row.datacontenttype):
            data = raw.decode(errors="replace")
        else:
            data_base64 = base64.b64encode(raw).decode()
    return EventOut(
        pk=row.pk, id=row.event_id, specversion=row.specversion, source=row.source, type=row.type,
        time=row.time, subject=row.subject, datacontenttype=row.datacontenttype, dataschema=row.dataschema,
        data=data, data_base64=data_base64, extensions=row.extensions, key=row.key, target=row.target,
        destination=row.destination, status=Status(row.status), attempts=row.attempts,
        next_attempt_at=row.next_attempt_at, last_error=row.last_error, created_at=row.created_at,
        published_at=row.published_at,
    )


def _event(pk: int) -> OutboxEvent:
    row = OutboxEvent.objects.filter(pk=pk).first()
    if row is None:
        raise HttpError(404, f"outbox event {pk} does not exist")
    return row


def _list(request: HttpRequest, user: Any, filters: EventFilter) -> EventPage:
    require_permission(user, "outbox.view_outboxevent")
    rows = OutboxEvent.objects.all()
    for name in ("status", "target", "type", "key"):
        value = getattr(filters, name)
        if value is not None:
            rows = rows.filter(**{name: value})
    if filters.after is not None:
        rows = rows.filter(pk__gt=filters.after)
    page = keyset_page(request, rows, "pk", filters)
    return EventPage(items=[event_out(r) for r in page.rows], next_cursor=page.next_cursor, next=page.next)


def _get(user: Any, pk: int) -> EventOut:
    require_permission(user, "outbox.view_outboxevent")
    return event_out(_event(pk))


def _check_routing(user: Any, body: EmitIn) -> None:
    """Over HTTP the outbox is no way around the broker's rights: an event for a topic needs the
    right to publish there (or to create topics), and choosing a RabbitMQ routing key or Redis
    stream yourself needs ``outbox.change_outboxevent``."""
    target = body.target or settings.OUTBOX_TARGET
    if target == "topic":
        slug = body.destination or settings.OUTBOX_TOPIC
        view = view_topic(slug, user)
        allowed = view.rights.produce if view is not None else may_add_topics(user)
        if not allowed:
            raise HttpError(403, f"not allowed to publish to topic {slug}")
    elif body.destination and not user.has_perm("outbox.change_outboxevent"):
        raise HttpError(403, "choosing a destination needs the outbox.change_outboxevent permission")


def _check_reserved(body: EmitIn) -> None:
    """Events Switchyard itself writes are not to be forged over HTTP: watchers of /ws/work-requests/
    trust the work request events, and a CQRS payload is published on the CQRS exchange routed by
    its own cqrs_id (into replicas' queues, around the routing-key permission above)."""
    if body.source in RESERVED_SOURCES:
        raise HttpError(422, f"source {body.source!r} is Switchyard's own: its events are not emitted over HTTP")
    if body.datacontenttype == CQRS_CONTENT_TYPE:
        raise HttpError(422, f"datacontenttype {CQRS_CONTENT_TYPE} is for CQRS masters' changes (MasterMixin)")


def _problem(error: Any) -> str:
    where = ".".join(map(str, error["loc"]))
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _emit(user: Any, body: EmitIn) -> EventOut:
    require_permission(user, "outbox.add_outboxevent")
    fields = body.model_dump(exclude={"data_base64"}, exclude_none=True)
    if body.data_base64 is not None:
        if body.data is not None:
            raise HttpError(422, "give data or data_base64, not both")
        try:
            fields["data"] = base64.b64decode(body.data_base64, validate=True)
        # A character outside ASCII is a ValueError of its own, not a binascii.Error.
        except ValueError:
            raise HttpError(422, "data_base64 is not valid base64") from None
    _check_reserved(body)
    _check_routing(user, body)
    try:
        return event_out(emit_many([EventIn(**fields)])[0])
    except ValidationError as exc:
        raise HttpError(422, "; ".join(_problem(e) for e in exc.errors())) from None
    except TargetNotConfigured as exc:
        raise HttpError(422, str(exc)) from None
    except IntegrityError:
        raise HttpError(409, f"an event with source {body.source!r} and id {body.id!r} exists") from None


def _retry_one(user: Any, pk: int) -> EventOut:
    require_permission(user, "outbox.change_outboxevent")
    row = _event(pk)
    if row.status not in (Status.FAILED, Status.RETRY):
        raise HttpError(409, f"event {pk} is {row.status}; only failed or retry events can be retried")
    claims.retry(Q(pk=pk))
    return event_out(_event(pk))


def _retry_failed(user: Any, type: str | None, key: str | None) -> Retried:
    require_permission(user, "outbox.change_outboxevent")
    selected = Q(status=Status.FAILED)
    if type is not None:
        selected &= Q(type=type)
    if key is not None:
        selected &= Q(key=key)
    return Retried(retried=claims.retry(selected))


def _delete(user: Any, pk: int) -> None:
    require_permission(user, "outbox.delete_outboxevent")
    deleted, _ = OutboxEvent.objects.filter(pk=pk, status=Status.FAILED).delete()
    if not deleted:
        row = _event(pk)
        raise HttpError(409, f"event {pk} is {row.status}; only dead letters (failed) can be deleted")


def _stats(user: Any) -> Stats:
    require_permission(user, "outbox.view_outboxevent")
    figures = claims.stats()
    return Stats.model_validate({name: int(v) if name != "lag_s" else v for name, v in figures.items()})


# Every operation needs a permission: 401 anonymous, 403 without it.
NEEDS = {401: "authentication required (Authorization: Token <key>)",
         403: "needs the outbox.view_outboxevent permission", 404: "outbox event 7 does not exist"}
EVENT_EXAMPLE = {
    "pk": 7, "id": "o-7", "specversion": "1.0", "source": "/orders", "type": "order.created",
    "time": "2025-05-01T12:00:00Z", "subject": "order/7", "datacontenttype": "application/json", "dataschema": None,
    "data": {"order": 7, "total": "12.50"}, "data_base64": None, "extensions": {"tenant": "acme"}, "key": "order-7",
    "target": "rabbitmq", "destination": "orders", "status": "published", "attempts": 1,
    "next_attempt_at": "2025-05-01T12:00:00Z", "last_error": "", "created_at": "2025-05-01T12:00:00Z",
    "published_at": "2025-05-01T12:00:00.004Z",
}
EMIT_EXAMPLE = {"type": "order.created", "source": "/orders", "id": "o-7", "subject": "order/7",
                "datacontenttype": "application/json", "data": {"order": 7, "total": "12.50"}, "key": "order-7"}
PENDING = {**EVENT_EXAMPLE, "status": "pending", "attempts": 0, "published_at": None}
NEXT_CURSOR = "WyIvYXBpL3YxL291dGJveC9ldmVudHMiLDdd"
LIST_DOCS = responses(200, {"items": [EVENT_EXAMPLE], "next_cursor": NEXT_CURSOR,
                            "next": f"/api/v1/outbox/events?limit=1&cursor={NEXT_CURSOR}"},
                      401, 403, 422, details=NEEDS)
EMIT_DOCS = responses(201, PENDING, 400, 401, 403, 409, 422, request=EMIT_EXAMPLE,
                      details={**NEEDS, 403: "not allowed to publish to topic sensors-7",
                               409: "an event with source '/orders' and id 'o-7' exists"})
GET_DOCS = responses(200, EVENT_EXAMPLE, 401, 403, 404, 422, details=NEEDS)
RETRY_DOCS = responses(200, {**PENDING, "attempts": 5, "last_error": "rabbitmq: connection refused"},
                       401, 403, 404, 409, 422,
                       details={**NEEDS, 409: "event 7 is published; only failed or retry events can be retried"})
DELETE_DOCS = responses(204, None, 401, 403, 404, 409, 422,
                        details={**NEEDS, 409: "event 7 is pending; only dead letters (failed) can be deleted"})
RETRY_ALL_DOCS = responses(200, {"retried": 3}, 401, 403, 422, details=NEEDS)
STATS_DOCS = responses(200, {"pending": 2, "processing": 1, "published": 10452, "retry": 0, "failed": 3,
                             "lag_s": 0.012}, 401, 403, details=NEEDS)


@router.get("/outbox/events", response={200: EventPage, **LIST_DOCS[0]}, openapi_extra=LIST_DOCS[1],
            summary="List outbox events (oldest first)")
async def list_events(request: HttpRequest, filters: Query[EventFilter]) -> EventPage:
    page: EventPage = await sync_to_async(_list)(request, request_user(request), filters)
    return page


@router.post("/outbox/events", response={201: EventOut, **EMIT_DOCS[0]}, openapi_extra=EMIT_DOCS[1],
             summary="Emit a CloudEvent through the outbox")
async def emit_event(request: HttpRequest, body: EmitIn) -> tuple[int, EventOut]:
    event: EventOut = await sync_to_async(_emit)(request_user(request), body)
    return 201, event


@router.get("/outbox/events/{pk}", response={200: EventOut, **GET_DOCS[0]}, openapi_extra=GET_DOCS[1],
            summary="One outbox event")
async def get_event(request: HttpRequest, pk: int) -> EventOut:
    event: EventOut = await sync_to_async(_get)(request_user(request), pk)
    return event


@router.post("/outbox/events/{pk}/retry", response={200: EventOut, **RETRY_DOCS[0]}, openapi_extra=RETRY_DOCS[1],
             summary="Retry a dead letter now")
async def retry_event(request: HttpRequest, pk: int) -> EventOut:
    event: EventOut = await sync_to_async(_retry_one)(request_user(request), pk)
    return event


@router.delete("/outbox/events/{pk}", response={204: None, **DELETE_DOCS[0]}, openapi_extra=DELETE_DOCS[1],
               summary="Delete a dead letter")
async def delete_event(request: HttpRequest, pk: int) -> tuple[int, None]:
    await sync_to_async(_delete)(request_user(request), pk)
    return 204, None


@router.post("/outbox/dead-letters/retry", response={200: Retried, **RETRY_ALL_DOCS[0]},
             openapi_extra=RETRY_ALL_DOCS[1], summary="Retry every dead letter (of a type or key)")
async def retry_dead_letters(request: HttpRequest, type: str | None = None, key: str | None = None) -> Retried:
    result: Retried = await sync_to_async(_retry_failed)(request_user(request), type, key)
    return result


@router.get("/outbox/stats", response={200: Stats, **STATS_DOCS[0]}, openapi_extra=STATS_DOCS[1],
            summary="Events per status and the relay's lag")
async def outbox_stats(request: HttpRequest) -> Stats:
    result: Stats = await sync_to_async(_stats)(request_user(request))
    return result
