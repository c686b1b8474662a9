"""Static files (the admin's styles, the status page's icon) served by WhiteNoise in front of Django.

WhiteNoise 6 is WSGI-only: its Django middleware is sync, and one sync middleware makes Django run
every request (API, status page, health check) through a thread and back. Its file index and
responses are used here instead, at the ASGI layer: a request under ``STATIC_URL`` costs one thread
hop to open the file (and one per chunk read, so a slow disk never stalls the event loop; with
``WHITENOISE_AUTOREFRESH`` one more to look the file up on disk); every other request passes
straight through to Django. Reading stops when the client goes away.

``manage.py collectstatic`` (run by ``make serve``) fills ``STATIC_ROOT``; when it is empty the
files are served from the apps' own directories instead, with a warning, so the admin keeps its
styles whoever starts the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware

logger = logging.getLogger(__name__)

ASGIApp = Any
CHUNK_BYTES = 64 * 1024


class _Index(WhiteNoiseMiddleware):  # type: ignore[misc]
    def add_files(self, root: str, prefix: str | None = None) -> None:
        # A missing STATIC_ROOT is reported by _index, as a log record: WhiteNoise's Python warning
        # could only be silenced by changing the process-wide warning filters.
        if self.autorefresh or os.path.isdir(root):
            super().add_files(root, prefix)


def _index() -> WhiteNoiseMiddleware:
    """WhiteNoise's table of the files to serve, configured from the Django settings (blocking)."""
    index = _Index(get_response=None)
    if not index.files and not index.autorefresh:
        logger.warning("no static files collected in %s (run `manage.py collectstatic`): serving them from the "
                       "apps' directories", settings.STATIC_ROOT)
        index.add_files_from_finders()
    return index


# WhiteNoise 6 answers single-byte ranges (``bytes=0-0``, the last byte) with 416 and accepts
# ``bytes=-0``; a server may ignore Range, and these small files are sent whole instead.
_IGNORED_HEADERS = frozenset({b"range", b"if-range"})


def _wsgi_headers(scope: dict[str, Any]) -> dict[str, str]:
    """The request headers the way WhiteNoise reads them (``HTTP_IF_NONE_MATCH``...), without Range."""
    return {"HTTP_" + name.decode("latin-1").upper().replace("-", "_"): value.decode("latin-1")
            for name, value in scope.get("headers", ()) if name.lower() not in _IGNORED_HEADERS}


class StaticFiles:
    """ASGI middleware: answers GET / HEAD under the static prefix from WhiteNoise's index."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.prefix = "/" + settings.STATIC_URL.strip("/") + "/"
        self.index: WhiteNoiseMiddleware | None = None
        self.loading = asyncio.Lock()
        self.security_headers = security_headers()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        index = await self._loaded()
        # The collected files are a dict; only autorefresh looks on disk.
        found = await asyncio.to_thread(index.find_file, path) if index.autorefresh else index.files.get(path)
        if found is None:
            await self.app(scope, receive, send)  # Django's 404
            return
        response = await asyncio.to_thread(found.get_response, scope["method"], _wsgi_headers(scope))
        await send_response(response, self.security_headers, receive, send)

    async def _loaded(self) -> WhiteNoiseMiddleware:
        if self.index is None:
            async with self.loading:
                if self.index is None:
                    self.index = await asyncio.to_thread(_index)
        return self.index


def security_headers() -> list[tuple[bytes, bytes]]:
    """The headers Django's SecurityMiddleware adds to every response of Django's, from the same settings
    (not Strict-Transport-Security, which depends on the request being secure)."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if policy := settings.SECURE_REFERRER_POLICY:
        shown = policy if isinstance(policy, str) else ",".join(policy)
        headers.append((b"referrer-policy", shown.encode("latin-1")))
    if opener := settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"cross-origin-opener-policy", opener.encode("latin-1")))
    return headers


async def send_response(response: Any, extra_headers: list[tuple[bytes, bytes]], receive: Any, send: Any) -> None:
    """Send WhiteNoise's ``response``, its file read a chunk at a time on a thread, until the client leaves."""
    headers = [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in response.headers]
    file = response.file
    # uvicorn drops what is sent after the client left, silently: its http.disconnect tells.
    gone = asyncio.create_task(_disconnected(receive))
    try:
        await send({"type": "http.response.start", "status": int(response.status), "headers": headers + extra_headers})
        while file is not None and not gone.done():
            chunk = await asyncio.to_thread(file.read, CHUNK_BYTES)
            if not chunk:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()
        await asyncio.wait([gone])
        if not gone.cancelled() and (exc := gone.exception()) is not None:
            logger.warning("reading the request of %s failed: %r", response, exc)
        if file is not None:
            file.close()


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
