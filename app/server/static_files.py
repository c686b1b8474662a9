"""Static files (the admin's styles, the status page's icon) served by WhiteNoise in front of Django.

WhiteNoise 6 is WSGI-only: its Django middleware is sync, and one sync middleware makes Django run
every request (API, status page, health check) through a thread and back. Its file index and
responses are used here instead, at the ASGI layer: a request under ``STATIC_URL`` costs one thread
hop to open the file (and one per chunk read, so a slow disk never stalls the event loop); every
other request passes straight through to Django.

``manage.py collectstatic`` (run by ``make serve``) fills ``STATIC_ROOT``; when it is empty the
files are served from the apps' own directories instead, with a warning, so the admin keeps its
styles whoever starts the server.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware

logger = logging.getLogger(__name__)

ASGIApp = Any
CHUNK_BYTES = 64 * 1024


def _index() -> WhiteNoiseMiddleware:
    """WhiteNoise's table of the files to serve, configured from the Django settings (blocking)."""
    with warnings.catch_warnings():
        # A missing STATIC_ROOT is reported below, as a log record rather than a Python warning.
        warnings.simplefilter("ignore")
        index = WhiteNoiseMiddleware(get_response=None)
    if not index.files and not index.autorefresh:
        logger.warning("no static files collected in %s (run `manage.py collectstatic`): serving them from the "
                       "apps' directories", settings.STATIC_ROOT)
        index.add_files_from_finders()
    return index


def _wsgi_headers(scope: dict[str, Any]) -> dict[str, str]:
    """The request headers the way WhiteNoise reads them (``HTTP_IF_NONE_MATCH``, ``HTTP_RANGE``...)."""
    return {"HTTP_" + name.decode("latin-1").upper().replace("-", "_"): value.decode("latin-1")
            for name, value in scope.get("headers", ())}


class StaticFiles:
    """ASGI middleware: answers GET / HEAD under the static prefix from WhiteNoise's index."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.prefix = "/" + settings.STATIC_URL.strip("/") + "/"
        self.index: WhiteNoiseMiddleware | None = None
        self.loading = asyncio.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        index = await self._loaded()
        found = await asyncio.to_thread(self._find, index, path)
        if found is None:
            await self.app(scope, receive, send)  # Django's 404
            return
        response = await asyncio.to_thread(found.get_response, scope["method"], _wsgi_headers(scope))
        await self._send(response, send)

    async def _loaded(self) -> WhiteNoiseMiddleware:
        if self.index is None:
            async with self.loading:
                if self.index is None:
                    self.index = await asyncio.to_thread(_index)
        return self.index

    @staticmethod
    def _find(index: WhiteNoiseMiddleware, path: str) -> Any:
        return index.find_file(path) if index.autorefresh else index.files.get(path)

    @staticmethod
    async def _send(response: Any, send: Any) -> None:
        headers = [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in response.headers]
        # What SecurityMiddleware adds to Django's own answers.
        headers.append((b"x-content-type-options", b"nosniff"))
        file = response.file
        try:
            await send({"type": "http.response.start", "status": int(response.status), "headers": headers})
            while file is not None:
                chunk = await asyncio.to_thread(file.read, CHUNK_BYTES)
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if file is not None:
                file.close()
