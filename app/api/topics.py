"""Topic availability over HTTP: status (200 online, 503 otherwise) and ping (docs/dasf-protocol.md section 10)."""

from __future__ import annotations

import contextvars
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema
from ninja.errors import HttpError

from app.api.auth import request_user
from app.api.examples import responses
from app.api.topic_resources import visible_topic
from app.availability.api_info import names
from app.availability.rules import Availability
from app.availability.services import TopicStatus, ping_topic, status_of
from app.broker.runtime import get_runtime
from consumers.probes import probe

router = Router(tags=["topics"])


class ApiInfoSummary(Schema):
    functions: list[str]
    classes: list[str]


class StatusOut(Schema):
    topic: str
    status: Availability
    last_ping: datetime | None
    last_pong: datetime | None
    api_info: ApiInfoSummary | None


class PingOut(Schema):
    topic: str
    pinged_at: datetime
    consumers_reached: int
    status_url: str


def _api_names(api_info: Any) -> ApiInfoSummary | None:
    found = names(api_info)
    return None if found is None else ApiInfoSummary(functions=list(found.functions), classes=list(found.classes))


NOT_PINGED = "topic is excluded from pings (supports_dasf is off)"
ONLINE = {"topic": "sensors-7", "status": "online", "last_ping": "2025-05-01T12:00:00Z",
          "last_pong": "2025-05-01T12:00:00.020Z", "api_info": {"functions": ["version", "add"], "classes": []}}
STATUS_DOCS = responses(200, ONLINE, 400, 401, 404, 422, details={400: NOT_PINGED},
                        others={503: {**ONLINE, "status": "offline", "last_pong": "2025-05-01T11:58:00Z"}})
PING_DOCS = responses(202, {"topic": "sensors-7", "pinged_at": "2025-05-01T12:00:00Z", "consumers_reached": 2,
                            "status_url": "/api/v1/topics/sensors-7/status"}, 400, 401, 403, 404, 422,
                      details={400: NOT_PINGED, 403: "not allowed to ping this topic"})


@router.get("/topics/{slug}/status", response={200: StatusOut, 503: StatusOut, **STATUS_DOCS[0]},
            openapi_extra=STATUS_DOCS[1], summary="Availability of a topic's consumers")
async def topic_status(request: HttpRequest, slug: str) -> tuple[int, StatusOut]:
    user = request_user(request)
    topic, rights = await sync_to_async(visible_topic)(slug, user)
    if not topic.supports_dasf:
        raise HttpError(400, NOT_PINGED)
    status: TopicStatus = await sync_to_async(status_of)(topic.pk)
    body = StatusOut(topic=slug, status=status.status, last_ping=status.last_ping, last_pong=status.last_pong,
                     api_info=_api_names(status.api_info))
    return (200 if status.status is Availability.ONLINE else 503), body


# Named for the bulk endpoint, which refuses it in a transaction (its probes go out at once).
@router.post("/topics/{slug}/ping", response={202: PingOut, **PING_DOCS[0]}, openapi_extra=PING_DOCS[1],
             url_name="topic-ping",
             summary="Ping a topic's consumers now")
async def topic_ping(request: HttpRequest, slug: str) -> tuple[int, PingOut]:
    user = request_user(request)
    topic, rights = await sync_to_async(visible_topic)(slug, user)
    if not rights.produce:
        raise HttpError(403, "not allowed to ping this topic")
    if topic.is_response_topic:
        raise HttpError(400, "response topics are never pinged (their consumer is a requester)")
    if not topic.supports_dasf:
        raise HttpError(400, NOT_PINGED)
    now = timezone.now()
    await sync_to_async(ping_topic)(topic.pk, now)
    # In a fresh context: tasks the delivery starts must not inherit this request's (its end would
    # strand their database calls; app/broker/signals.py).
    reached = contextvars.Context().run(get_runtime().deliver, slug, probe("ping"))
    return 202, PingOut(topic=slug, pinged_at=now, consumers_reached=reached,
                        status_url=f"/api/v1/topics/{slug}/status")
