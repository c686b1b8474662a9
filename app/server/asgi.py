"""The ASGI application: Django for HTTP, the broker consumers for websockets, and a lifespan
that flushes the group-commit writer on shutdown."""

from __future__ import annotations

import logging
from typing import Any

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

from app.broker.runtime import get_runtime, stop_runtime
from consumers.auth import token_auth_stack
from consumers.routing import websocket_urlpatterns

logger = logging.getLogger(__name__)

ASGIApp = Any


class Lifespan:
    """Owns the process-wide runtime: created at startup, stopped (writes flushed) at shutdown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                get_runtime()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await stop_runtime()
                except Exception:
                    logger.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": "see log"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_application() -> ASGIApp:
    return Lifespan(
        ProtocolTypeRouter(
            {
                "http": get_asgi_application(),
                "websocket": token_auth_stack(URLRouter(websocket_urlpatterns)),
            }
        )
    )
