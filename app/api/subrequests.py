"""One bulk operation as a request of its own, answered by the view a direct request reaches.

The request is built from the bulk's own (its client, server, scheme and ``Host``), resolved
against the server's URLs under ``/api/v1/`` and run in the calling thread: ``dispatch`` is called
from the bulk's one ``sync_to_async`` thread, the async view runs on the server's event loop, and
every ``sync_to_async`` call it makes comes back to that thread (asgiref runs thread-sensitive code
in the thread blocked in ``async_to_sync``). So every query of every operation uses that thread's
database connection, and a transaction opened there holds them all.

Middleware does not run again: the bulk request passed it. The caller is the one ``Caller`` gives
the operation (app/api/auth.py), never one named by the operation's own headers.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve

from app.api.auth import run_as

API_ROOT = "/api/v1/"
NAMESPACE = "api-v1"
BULK_URL_NAME = "bulk"
# The topic ping sends probes to open sockets at once: no transaction can take that back.
OUTSIDE_TRANSACTIONS = frozenset({"topic-ping"})
# An operation runs as the bulk's caller: it cannot name another (nor is the body anything but JSON).
REFUSED_HEADERS = frozenset({"authorization", "cookie", "host", "content-type", "content-length"})


class Refused(Exception):
    """The bulk refuses an operation before any view sees it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    data: Any
    # The body's length in bytes; ``data`` is None, the body not parsed, if it is over the room given.
    size: int


def build(outer: HttpRequest, method: str, path: str, query: str, data: Any, headers: dict[str, str],
          caller: Any) -> ASGIRequest:
    """The operation's request: ``path`` under the API root, ``data`` as its JSON body."""
    for name in headers:
        if name.lower() in REFUSED_HEADERS:
            raise Refused(422, f"headers: {name} is not allowed in an operation (it runs as the bulk's caller)")
    body = b"" if data is None else json.dumps(data).encode()
    # As a direct request's would be refused (413, 431): what its references made of it too.
    body_limit: int = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if len(body) > body_limit:
        raise Refused(422, f"data: {len(body)} bytes as JSON, more than DATA_UPLOAD_MAX_MEMORY_SIZE ({body_limit})")
    head_limit: int = settings.MAX_REQUEST_HEAD_BYTES
    head = len(path.encode()) + len(query.encode()) + sum(len(f"{name}: {value}".encode())
                                                          for name, value in headers.items())
    if head > head_limit:
        raise Refused(422, f"path, query and headers: {head} bytes, more than MAX_REQUEST_HEAD_BYTES ({head_limit})")
    base: dict[str, Any] = getattr(outer, "scope", {})
    try:
        sent = [(name.lower().encode("latin1"), value.encode("latin1")) for name, value in headers.items()]
    except UnicodeEncodeError:
        raise Refused(422, "headers: names and values must be latin-1 text, as HTTP's are") from None
    scope = {
        "type": "http", "method": method, "path": path, "query_string": query.encode(), "root_path": "",
        "scheme": outer.scheme, "client": base.get("client"), "server": base.get("server"),
        "headers": [(b"host", outer.get_host().encode()), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *sent],
    }
    request = ASGIRequest(scope, io.BytesIO(body))
    run_as(request, caller)
    return request


def dispatch(request: ASGIRequest, transactional: bool, room: int) -> Answer:
    """Resolve and run ``request`` in this (synchronous) thread; its answer's status and JSON body,
    parsed (once) only if it is at most ``room`` bytes: the bulk keeps no more (BULK_MAX_RESULT_BYTES)."""
    match = _resolved(request)
    if match.namespace != NAMESPACE:
        raise Refused(404, f"no API operation at {request.path}")
    if match.url_name == BULK_URL_NAME:
        raise Refused(422, "a bulk cannot hold a bulk")
    if transactional and match.url_name in OUTSIDE_TRANSACTIONS:
        raise Refused(422, f"{request.path} acts outside the database at once: use PUT (no transaction)")
    request.resolver_match = match
    view = match.func
    try:
        if iscoroutinefunction(view):
            response: HttpResponseBase = async_to_sync(view)(request, *match.args, **match.kwargs)
        else:
            response = view(request, *match.args, **match.kwargs)
    except Http404:
        # Django's handler answers 404 for it (the API root raises it): no operation there.
        raise Refused(404, f"no API operation at {request.path}") from None
    content: bytes = getattr(response, "content", b"")
    return Answer(response.status_code, _data(response, content) if len(content) <= room else None, len(content))


def _resolved(request: ASGIRequest) -> Any:
    # As APPEND_SLASH would redirect: paths are written without one, and /_bulk/ has one.
    for path in (request.path_info, request.path_info + "/"):
        try:
            return resolve(path)
        except Resolver404:
            continue
    raise Refused(404, f"no API operation at {request.path}")


def _data(response: HttpResponseBase, content: bytes) -> Any:
    if not content:
        return None
    if response.get("Content-Type", "").startswith("application/json"):
        return json.loads(content)
    return content.decode(response.charset or "utf-8", errors="replace")
