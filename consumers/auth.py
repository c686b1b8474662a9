"""Handshake authentication: ``Authorization: Token|Bearer <key>``, ``?token=``, or a session."""

from __future__ import annotations

import logging
from http import HTTPStatus
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from app.auth.credentials import Credential
from app.auth.login_throttle import address_key
from app.auth.services import hash_key, key_from_authorization, principal_of, token_for_key
from app.broker.admission import Refusal
from app.broker.runtime import BrokerRuntime, get_runtime
from consumers.refusals import send_refusal

logger = logging.getLogger(__name__)

# Paths whose consumer looks its token up itself: a worker's key belongs to an inactive owner and
# acts as nobody on the broker (app/work/workers.py), so looked up here it would count as a failed
# authentication of the worker's address. Only the connection-rate limits of an unauthenticated
# connection apply to them here.
SELF_AUTHENTICATING_PATHS = frozenset({"/ws/workers", "/ws/workers/"})


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

    Before any of that costs a query, the handshake passes the connection-rate limits
    (app/broker/admission.py); a refused one is answered with HTTP 429. Tokens already checked
    come from the runtime's credential cache.

    channels' session middleware would wrap ``send`` for every outgoing frame; reading the session
    once at connect costs nothing per frame.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        runtime = get_runtime()
        admission, now = runtime.admission, runtime.loop.time()
        address = client_address(scope)
        if scope.get("path") in SELF_AUTHENTICATING_PATHS:
            found: tuple[Any, dict[str, Any]] | None = (None, {})
        else:
            found = await self.authenticate(scope, runtime, address, now)
        if found is None:
            # Not "invalid": the key was not looked at (this address keeps sending bad ones).
            reason = "too many failed authentications from this address"
            return await refuse_handshake(receive, send, HTTPStatus.TOO_MANY_REQUESTS, reason)
        user, extra = found
        if getattr(user, "is_authenticated", False):
            admitted = admission.authenticated(principal_of(user), now)
        else:
            admitted = admission.anonymous(address, now)
        if admitted is None:
            return await refuse_handshake(receive, send, HTTPStatus.TOO_MANY_REQUESTS, "too many connections")
        # Into the connection's own scope rather than a copy: the copy would be held (~1 KiB) for as
        # long as the socket is open; the layers above do not mind the added keys.
        scope["user"] = user or AnonymousUser()
        scope.update(extra)
        try:
            return await self.inner(scope, receive, send)
        finally:
            admission.release(admitted)

    async def authenticate(
        self, scope: dict[str, Any], runtime: BrokerRuntime, address: str, now: float
    ) -> tuple[Any, dict[str, Any]] | None:
        """The user (None: anonymous) and what to add to the scope; None when credentials from
        this address may not be looked up now."""
        admission = runtime.admission
        # Revocations applied so far; one applied after this and before the connection is registered
        # for them (consumers/base.py) would miss it: the connection checks its credentials again.
        checked = {"credentials_generation": runtime.credentials.generation}
        key = token_from_scope(scope)
        if key == "":
            return None, {"auth_error": "invalid or disabled token"}  # an Authorization header of another scheme
        if key is None:
            session_key = session_key_from_scope(scope)
            if not session_key or not same_origin(scope):
                return None, {}
            if not admission.may_look_up(address, now):
                return None
            store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
            user = await get_user({"session": store})
            if not getattr(user, "is_authenticated", False):
                admission.lookup_failed(address, now)
                return user, {}
            return user, checked
        key_hash = hash_key(key)
        credential = runtime.credentials.get(key_hash, now)
        if credential is None:
            if not admission.may_look_up(address, now):
                return None
            generation = checked["credentials_generation"]
            token = await database_sync_to_async(token_for_key)(key)
            if token is None:
                admission.lookup_failed(address, now)
                return None, {"auth_error": "invalid or disabled token"}
            credential = Credential(token.user, token.pk, principal_of(token.user))
            runtime.credentials.put(key_hash, credential, now, generation)
        return credential.user, {"token_id": credential.token_id, **checked}


def client_address(scope: dict[str, Any]) -> str:
    """The client address as limits count it: IPv6 by its /64 (one host may hold all of one)."""
    client = scope.get("client")
    return address_key(str(client[0])) if client else "unknown"


async def refuse_handshake(receive: Any, send: Any, status: HTTPStatus, reason: str) -> None:
    """Answer the handshake with an HTTP error, before any consumer runs."""
    await refuse_unread_handshake(receive, send, Refusal(status, reason))


async def refuse_unread_handshake(receive: Any, send: Any, refusal: Refusal) -> None:
    """Read the handshake's ``websocket.connect`` and answer it with ``refusal``."""
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send_refusal(send, refusal)


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
    try:
        netloc = urlsplit(origin.decode("latin-1")).netloc
    except ValueError:
        return False  # no URL ("http://[::1": an IPv6 bracket left open): no page of this host sent it
    return netloc == headers.get(b"host", b"").decode("latin-1")


def token_auth_stack(inner: Any) -> Any:
    return ConnectionAuthMiddleware(inner)
