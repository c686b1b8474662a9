"""Who is calling: ``Authorization: Token|Bearer <key>``, else the session user, else anonymous."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from app.auth.services import key_from_authorization, user_for_key


async def request_user(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization", "")
    if header:
        key = key_from_authorization(header)
        user = await sync_to_async(user_for_key)(key) if key else None
        return user or AnonymousUser()
    return await request.auser()
