"""Handshake authentication: ``Authorization: Token|Bearer <key>``, ``?token=``, or a session."""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from app.auth.services import key_from_authorization, token_for_key


def token_from_scope(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return key_from_authorization(value.decode("latin-1"))
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "token" in query:
        return str(query["token"][0])
    return None


class ConnectionAuthMiddleware(BaseMiddleware):  # type: ignore[misc]
    """Sets ``scope["user"]`` once per connection: from a token when one is given, else from the
    session cookie of a logged-in user, else anonymous. A bad token is anonymous (permissions
    decide) and is noted in ``scope["auth_error"]`` so refusals can say why.

    channels' session middleware would wrap ``send`` for every outgoing frame; reading the session
    once at connect costs nothing per frame.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = token_from_scope(scope)
        user: Any = None
        extra: dict[str, Any] = {}
        if key is not None:
            token = await database_sync_to_async(token_for_key)(key) if key else None
            if token is None:
                extra["auth_error"] = "invalid or disabled token"
            else:
                user, extra["token_id"] = token.user, token.pk
        else:
            session_key = session_key_from_scope(scope)
            if session_key and same_origin(scope):
                store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
                user = await get_user({"session": store})
        return await self.inner(dict(scope, user=user or AnonymousUser(), **extra), receive, send)


def session_key_from_scope(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return parse_cookie(value.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
    return None


def same_origin(scope: dict[str, Any]) -> bool:
    """A browser sends its session cookie to any page's websocket; only a page served by this host
    may use it (no Origin header: not a browser, nothing to forge)."""
    headers: dict[bytes, bytes] = dict(scope.get("headers", ()))
    origin = headers.get(b"origin")
    if origin is None:
        return True
    return urlsplit(origin.decode("latin-1")).netloc == headers.get(b"host", b"").decode("latin-1")


def token_auth_stack(inner: Any) -> Any:
    return ConnectionAuthMiddleware(inner)
