"""Who called, for the access line of a request outside the HTTP API (admin, status page, login).

Django resolves the session user lazily, when a view or middleware asks for it; asking here would
cost a session and a user query on requests that never needed them (static files, /healthz). So
the access line names the session user only when the request looked it up anyway, and leaves ``-``
otherwise. The HTTP API's auth names its caller itself (app/api/auth.py), token or session, and is
never overridden here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from app.auth.services import principal_of
from app.server.access_log import note_caller, noted_caller

# Where django.contrib.auth.middleware caches the session user once get_user / auser looked it up.
_CACHED_USER = ("_cached_user", "_acached_user")


def note_session_caller(request: HttpRequest) -> None:
    scope: dict[str, Any] | None = getattr(request, "scope", None)
    if scope is None or noted_caller(scope) is not None:
        return
    for name in _CACHED_USER:
        user = getattr(request, name, None)
        if user is not None:
            note_caller(scope, principal_of(user))
            return


class SessionCaller:
    """Django middleware (sync and async): after the view, the session user if it was looked up."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        response = self.get_response(request)
        note_session_caller(request)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        response = await get_response(request)
        note_session_caller(request)
        return response
