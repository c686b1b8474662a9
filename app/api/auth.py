"""Who is calling: ``Authorization: Token|Bearer <key>``, else the session user, else anonymous."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from app.auth.services import user_for_key

SCHEMES = {"token", "bearer"}


async def request_user(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization", "")
    if header:
        parts = header.split()
        if len(parts) == 2 and parts[0].lower() in SCHEMES:
            user = await sync_to_async(user_for_key)(parts[1])
            if user is not None:
                return user
        return AnonymousUser()
    return await request.auser()
