"""A topic's stored messages over HTTP: list, get, delete one or many, publish one again.

Reading needs the right to consume the topic (or the ``broker.view_message`` permission);
deleting ``broker.delete_message``; re-sending also the right to produce there. A topic the
caller may not see answers 404 like a missing one (app/api/topic_resources.py ``visible_topic``); a
message id the topic does not hold answers 404 too. Which messages are stored follows the
topic's policy: under ``cache`` an acked message is gone, under ``disabled`` nothing is kept.
"""

from __future__ import annotations

import contextvars
import uuid
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models.functions import Length
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from pydantic import field_validator, model_validator

from app.api.auth import refusal, request_user
from app.api.examples import responses
from app.api.instants import UtcDatetime
from app.api.pagination import PageOut, PageParams, keyset_page
from app.api.topic_resources import visible_topic
from app.broker import stored
from app.broker.hub import Delivered
from app.broker.models import Message, Topic
from app.broker.permissions import Rights, rights_on
from app.broker.runtime import BrokerRuntime, get_runtime
from app.broker.stored import DeliveryFacts, DeliveryState, MessageFilter, Resent

router = Router(tags=["messages"])

VIEW_MESSAGE = "broker.view_message"
DELETE_MESSAGE = "broker.delete_message"


class MessageOut(Schema):
    message_id: uuid.UUID
    sequence: int = Field(description="the message's position in its topic (increasing)")
    topic: str
    publish_time: datetime
    producer: str = Field(description="the producing principal: user:<id>, anonymous, or outbox")
    properties: dict[str, Any]
    payload: str | None = Field(description="as the producer sent it (DASF and Pulsar: base64)")
    context: Any = Field(description="the producer's context, echoed in its acks")
    response_topic: str | None = Field(description="where a request's answers go")
    deliver_at: datetime | None = Field(description="Pulsar delayed delivery: held from Shared subscriptions until")
    acked_by: list[str] = Field(description="the principals that acked it")
    redelivery_count: int = Field(description="the most times it was handed out again to one principal")


class MessagePage(PageOut):
    items: list[MessageOut]


class MessageQuery(Schema):
    since: UtcDatetime | None = Field(None, description="published at or after (no offset: UTC)")
    until: UtcDatetime | None = Field(None, description="published before (no offset: UTC)")
    state: DeliveryState | None = Field(
        None, description="unacked: nobody acked it; acked: somebody did; redelivered: handed out again")
    principal: str | None = Field(None, description="the state of this principal only (e.g. user:12)")
    producer: str | None = Field(None, description="the producing principal")

    @field_validator("principal", "producer")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # No principal holds one, and PostgreSQL refuses it in text.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL")
        return value

    @model_validator(mode="after")
    def _principal_with_state(self) -> MessageQuery:
        if self.principal is not None and self.state is None:
            raise ValueError("principal names whose delivery state is meant: give state too")
        return self

    def message_filter(self) -> MessageFilter:
        return MessageFilter(self.since, self.until, self.state, self.principal, self.producer)


class MessageListQuery(PageParams, MessageQuery):
    pass


class PurgeOut(Schema):
    deleted: int


class ResentOut(Schema):
    message_id: uuid.UUID = Field(description="the copy's new id")
    sequence: int | None = Field(description="null: the topic stores nothing now; only live consumers got it")
    publish_time: datetime
    resent_from: uuid.UUID


MESSAGE_EXAMPLE = {
    "message_id": "0b5c3f5e-3a52-4a8e-9b57-5c1f0d6a2b11", "sequence": 42, "topic": "sensors-7",
    "publish_time": "2025-05-01T12:00:00Z", "producer": "user:12",
    "properties": {"messageType": "request", "response_topic": "sensors-7_response_1"},
    "payload": "eyJmdW5jX25hbWUiOiAidmVyc2lvbiJ9", "context": "req-1", "response_topic": "sensors-7_response_1",
    "deliver_at": None, "acked_by": ["user:14"], "redelivery_count": 0,
}


def message_out(message: Message, topic: Topic, facts: DeliveryFacts) -> MessageOut:
    response = message.response_topic
    return MessageOut(
        message_id=message.message_id, sequence=message.sequence, topic=topic.slug,
        publish_time=message.publish_time, producer=message.producer_principal,
        properties=message.properties if isinstance(message.properties, dict) else {},
        payload=message.payload, context=message.context,
        response_topic=response.slug if response is not None else None, deliver_at=message.deliver_at,
        acked_by=facts.acked_by, redelivery_count=facts.redelivery_count,
    )


def _readable(user: Any, slug: str) -> tuple[Topic, Rights]:
    topic, rights = visible_topic(slug, user)
    if not (rights.consume or user.has_perm(VIEW_MESSAGE)):
        raise refusal(user, "reading a topic's messages needs the right to consume it")
    return topic, rights


def _deletable(user: Any, slug: str) -> Topic:
    topic, _ = visible_topic(slug, user)
    if not user.has_perm(DELETE_MESSAGE):
        raise refusal(user, f"needs the {DELETE_MESSAGE} permission")
    return topic


def _message(topic: Topic, message_id: uuid.UUID) -> Message:
    message = stored.find(topic, message_id)
    if message is None:
        raise HttpError(404, f"message {message_id} does not exist in topic {topic.slug}")
    return message


def _frame_chars(message: Any) -> int:
    return int(message.frame_chars)


def _list(request: HttpRequest, user: Any, slug: str, query: MessageListQuery) -> MessagePage:
    topic, _ = _readable(user, slug)
    # The frame is not shown, only weighed: a page ends at API_PAGE_MAX_BYTES of them.
    rows = (stored.filtered(topic, query.message_filter()).select_related("response_topic").defer("frame")
            .annotate(frame_chars=Length("frame")))
    page = keyset_page(request, rows, "sequence", query, weigh=_frame_chars,
                       max_weight=settings.API_PAGE_MAX_BYTES)
    facts = stored.delivery_facts(page.rows)
    return MessagePage(items=[message_out(m, topic, facts.get(m.pk, DeliveryFacts())) for m in page.rows],
                       next_cursor=page.next_cursor, next=page.next)


def _get(user: Any, slug: str, message_id: uuid.UUID) -> MessageOut:
    topic, _ = _readable(user, slug)
    message = _message(topic, message_id)
    return message_out(message, topic, stored.delivery_facts([message]).get(message.pk, DeliveryFacts()))


def _delete(user: Any, slug: str, message_id: uuid.UUID) -> None:
    stored.delete(_message(_deletable(user, slug), message_id))


def _purge(user: Any, slug: str, query: MessageQuery) -> PurgeOut:
    return PurgeOut(deleted=stored.purge(_deletable(user, slug), query.message_filter()))


def _resend(user: Any, slug: str, message_id: uuid.UUID, runtime: BrokerRuntime) -> ResentOut:
    topic, rights = _readable(user, slug)
    if not rights.produce:
        raise refusal(user, "re-sending needs the right to produce to the topic")
    message = _message(topic, message_id)
    answers = message.response_topic
    if answers is not None and not rights_on(user, answers).consume:
        # As on the websocket: nobody sends a request whose answers go into another's response topic.
        raise refusal(user, f"its answers go to {answers.slug}, which only its requester may consume")

    def deliver(sent: Resent) -> None:
        # After the commit, on this request's worker thread: the hub belongs to the event loop. A
        # fresh context, as app/broker/signals.py: tasks the delivery starts (a consumer's gap
        # repair) must not inherit asgiref's context of this request, which ends.
        item = Delivered(sent.frame, str(sent.message_id), sent.sequence)
        runtime.loop.call_soon_threadsafe(runtime.deliver, topic.slug, item, context=contextvars.Context())

    sent = stored.resend(message, topic, user, timezone.now(), deliver)
    return ResentOut(message_id=sent.message_id, sequence=sent.sequence, publish_time=sent.publish_time,
                     resent_from=message.message_id)


LIST_DOCS = responses(200, {"items": [MESSAGE_EXAMPLE], "next_cursor": None, "next": None}, 401, 403, 404, 422)
GET_DOCS = responses(200, MESSAGE_EXAMPLE, 401, 403, 404, 422)
DELETE_DOCS = responses(204, None, 401, 403, 404, 422)
PURGE_DOCS = responses(200, {"deleted": 1250}, 401, 403, 404, 422)
RESEND_DOCS = responses(201, {"message_id": "7d1e2a90-4c1b-4f0e-8a55-2e9b7c3d4f60", "sequence": 43,
                              "publish_time": "2025-05-01T12:05:00Z",
                              "resent_from": "0b5c3f5e-3a52-4a8e-9b57-5c1f0d6a2b11"}, 401, 403, 404, 422)


@router.get("/topics/{slug}/messages", response={200: MessagePage, **LIST_DOCS[0]},
            openapi_extra=LIST_DOCS[1], summary="List a topic's stored messages (by sequence, cursor-paginated)")
async def list_messages(request: HttpRequest, slug: str, query: Query[MessageListQuery]) -> MessagePage:
    page: MessagePage = await sync_to_async(_list)(request, request_user(request), slug, query)
    return page


@router.delete("/topics/{slug}/messages", response={200: PurgeOut, **PURGE_DOCS[0]},
               openapi_extra=PURGE_DOCS[1], summary="Delete the stored messages that match the filters")
async def purge_messages(request: HttpRequest, slug: str, query: Query[MessageQuery]) -> PurgeOut:
    deleted: PurgeOut = await sync_to_async(_purge)(request_user(request), slug, query)
    return deleted


@router.get("/topics/{slug}/messages/{message_id}", response={200: MessageOut, **GET_DOCS[0]},
            openapi_extra=GET_DOCS[1], summary="One stored message with its delivery state")
async def get_message(request: HttpRequest, slug: str, message_id: uuid.UUID) -> MessageOut:
    message: MessageOut = await sync_to_async(_get)(request_user(request), slug, message_id)
    return message


@router.delete("/topics/{slug}/messages/{message_id}", response={204: None, **DELETE_DOCS[0]},
               openapi_extra=DELETE_DOCS[1], summary="Delete one stored message")
async def delete_message(request: HttpRequest, slug: str, message_id: uuid.UUID) -> tuple[int, None]:
    await sync_to_async(_delete)(request_user(request), slug, message_id)
    return 204, None


@router.post("/topics/{slug}/messages/{message_id}/resend", response={201: ResentOut, **RESEND_DOCS[0]},
             openapi_extra=RESEND_DOCS[1], summary="Publish a stored message again, as a new message")
async def resend_message(request: HttpRequest, slug: str, message_id: uuid.UUID) -> tuple[int, ResentOut]:
    sent: ResentOut = await sync_to_async(_resend)(request_user(request), slug, message_id, get_runtime())
    return 201, sent
