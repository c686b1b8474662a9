"""Who is calling: ``Authorization: Token|Bearer <key>``, else the session user, else anonymous.

An ``Authorization`` header that names no enabled token of an active user is a 401: a client that
meant to authenticate learns its key is bad rather than being served as anonymous.

``Caller`` is the API-wide ninja auth, so every operation, present and future, resolves its caller
here. ninja exempts its views from Django's CSRF middleware; a browser sends the session cookie
with any cross-site form or fetch, so a session-authenticated unsafe request must pass Django's
CSRF check (token and Origin/Referer) here. Token requests need none: no browser attaches an
``Authorization`` header on its own.

An operation of a bulk request (app/api/bulk.py) is a request the server builds: it carries the
caller its bulk's credentials name as of that operation (``run_as``), and no CSRF check of its own
(the bulk request, itself a write, passed it).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user
from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.utils import check_csrf

from app.auth.services import key_from_authorization, principal_of, user_for_key
from app.server.access_log import note_caller

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

CSRF_REFUSED = (
    "CSRF check failed: a session-authenticated write needs the csrftoken cookie's value in an X-CSRFToken "
    "header and a same-origin Origin or Referer (or authenticate with Authorization: Token <key>)"
)
AUTHENTICATION_REQUIRED = "authentication required (Authorization: Token <key>)"
INVALID_TOKEN = "invalid token (Authorization: Token <key> names no enabled token of an active user)"
# Set only on requests the server builds itself: no client can put an attribute on a request.
_RUN_AS = "_switchyard_run_as"


class Caller:
    """ninja auth that refuses only a bad token: the caller (possibly anonymous) becomes
    ``request.auth``, and each operation decides what that caller may do. The access line names
    it (app/server/access_log.py)."""

    # Tells ninja's interactive docs to send the CSRF token, so a logged-in admin can try writes there.
    csrf = True

    async def __call__(self, request: HttpRequest) -> Any:
        user = await self._resolve(request)
        # A request the bulk built has a scope of its own without the access log's Who: a no-op there.
        note_caller(getattr(request, "scope", {}), principal_of(user))
        return user

    async def _resolve(self, request: HttpRequest) -> Any:
        if hasattr(request, _RUN_AS):
            user = getattr(request, _RUN_AS)
            if user is None:
                raise HttpError(401, INVALID_TOKEN)
            return user
        header = request.headers.get("Authorization", "")
        if header:
            key = key_from_authorization(header)
            user = await sync_to_async(user_for_key)(key) if key else None
            if user is None:
                raise HttpError(401, INVALID_TOKEN)
            return user
        user = await request.auser()
        if user.is_authenticated and request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise HttpError(403, CSRF_REFUSED)
        # AnonymousUser is truthy, so ninja takes it as a resolved caller rather than a 401.
        return user


def request_user(request: HttpRequest) -> Any:
    """The caller ``Caller`` resolved for this request."""
    return request.auth  # type: ignore[attr-defined]


def caller_now(request: HttpRequest) -> Any | None:
    """Whom ``request``'s credentials name now (synchronous): the token's user, else the session's
    (anonymous without one); None for a token that no longer authenticates."""
    header = request.headers.get("Authorization", "")
    if header:
        key = key_from_authorization(header)
        return user_for_key(key) if key else None
    return get_user(request)


def run_as(request: HttpRequest, user: Any | None) -> None:
    """Make ``user`` the caller of a request the server built (None: a 401, as a revoked token gets)."""
    setattr(request, _RUN_AS, user)


def refusal(user: Any, reason: str) -> HttpError:
    """The answer to a caller lacking a right: 401 when anonymous (a token may help), else 403."""
    if not user.is_authenticated:
        return HttpError(401, AUTHENTICATION_REQUIRED)
    return HttpError(403, reason)


def require_permission(user: Any, permission: str) -> None:
    """Refuse (``refusal``) a caller without the model permission ``permission``."""
    if not (user.is_active and user.has_perm(permission)):
        raise refusal(user, f"needs the {permission} permission")
