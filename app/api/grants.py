"""Grant or revoke a user's rights on a topic over HTTP (staff with the change-topic permission).

Connections everywhere re-read their rights once the change is committed (app/broker/signals.py).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from guardian.shortcuts import assign_perm, get_perms, remove_perm
from ninja import Router, Schema
from ninja.errors import HttpError

from app.api.auth import request_user
from app.api.examples import responses
from app.broker.models import Topic

router = Router(tags=["topics"])

RIGHTS = ("can_produce", "can_consume", "can_view_status")


class GrantIn(Schema):
    can_produce: bool | None = None
    can_consume: bool | None = None
    can_view_status: bool | None = None


class GrantOut(Schema):
    topic: str
    user: str
    rights: list[str]


def _apply(admin: Any, slug: str, username: str, change: GrantIn) -> GrantOut:
    if not (admin.is_active and admin.is_staff and admin.has_perm("broker.change_topic")):
        raise HttpError(403, "changing rights needs a staff user with broker.change_topic")
    topic = Topic.objects.filter(slug=slug).first()
    if topic is None:
        raise HttpError(404, f"topic {slug} does not exist")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise HttpError(404, f"user {username} does not exist")
    for right in RIGHTS:
        wanted = getattr(change, right)
        if wanted is True:
            assign_perm(f"broker.{right}", user, topic)
        elif wanted is False:
            remove_perm(f"broker.{right}", user, topic)
    held = [p for p in get_perms(user, topic) if p in RIGHTS]
    return GrantOut(topic=slug, user=username, rights=sorted(held))


GRANT_DOCS = responses(200, {"topic": "sensors-7", "user": "alice", "rights": ["can_consume", "can_view_status"]},
                       400, 401, 403, 404, 422, request={"can_consume": True, "can_view_status": True},
                       details={403: "changing rights needs a staff user with broker.change_topic"})


@router.put("/topics/{slug}/grants/{username}", response={200: GrantOut, **GRANT_DOCS[0]}, openapi_extra=GRANT_DOCS[1],
            summary="Grant or revoke rights on a topic")
async def put_grant(request: HttpRequest, slug: str, username: str, change: GrantIn) -> GrantOut:
    admin = request_user(request)
    result: GrantOut = await sync_to_async(_apply)(admin, slug, username, change)
    return result
