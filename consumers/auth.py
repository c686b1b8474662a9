"""Handshake authentication: ``Authorization: Token|Bearer <key>``, ``?token=``, or a session."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser

from app.auth.services import user_for_key

SCHEMES = {"token", "bearer"}


def token_from_scope(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0].lower() in SCHEMES:
                return str(parts[1])
            return ""  # present but malformed: authenticates nobody
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "token" in query:
        return str(query["token"][0])
    return None


class TokenAuthMiddleware(BaseMiddleware):  # type: ignore[misc]
    """Sets ``scope["user"]``; a bad token is anonymous (permissions decide) and is noted in
    ``scope["auth_error"]`` so refusals can say why."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = token_from_scope(scope)
        if key is None:
            return await self.inner(scope, receive, send)
        user = await database_sync_to_async(user_for_key)(key) if key else None
        scope = dict(scope, user=user or AnonymousUser())
        if user is None:
            scope["auth_error"] = "invalid or disabled token"
        return await self.inner(scope, receive, send)


def token_auth_stack(inner: Any) -> Any:
    """Session auth for logged-in admin users, overridden by a token when one is given."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(TokenAuthMiddleware(inner))))
