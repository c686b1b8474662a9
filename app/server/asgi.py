"""The ASGI application: Django for HTTP, the broker consumers for websockets, and a lifespan
that flushes the group-commit writer on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.core.asgi import get_asgi_application

from app.broker.runtime import BrokerRuntime, get_runtime, stop_runtime
from app.server.access_log import AccessLog, start_writer, stop_writer
from app.server.static_files import StaticFiles
from consumers.auth import token_auth_stack
from consumers.routing import websocket_urlpatterns
from relays.announcements import announcement_loop
from relays.cqrs_sources import cqrs_consumer_loop
from relays.garbage_collection import garbage_collection_loop
from relays.outbox import outbox_relay_loop
from relays.ping import attach_ping_loop, ping_loop
from relays.resync import resync_loop
from relays.status import status_refresh_loop
from relays.work_feed import work_feed_loop
from relays.workers import worker_check_loop

logger = logging.getLogger(__name__)

ASGIApp = Any


class Lifespan:
    """Owns the process-wide runtime and the relay loops: started at startup; at shutdown the
    loops are cancelled and awaited, then the group-commit writer flushes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if settings.ACCESS_LOG:
                    start_writer()
                try:
                    runtime = get_runtime()
                    await runtime.start()
                except Exception as exc:
                    logger.exception("startup failed")
                    await asyncio.to_thread(stop_writer)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.start(runtime)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.stop()
                except Exception:
                    logger.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": "see log"})
                    return
                finally:
                    # It waits for stderr to take what is queued.
                    await asyncio.to_thread(stop_writer)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self, runtime: BrokerRuntime) -> None:
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("announcements", announcement_loop(runtime)),
            ("status-refresh", status_refresh_loop(runtime)),
            ("resync", resync_loop(runtime)),
            ("work-feed", work_feed_loop(runtime)),
        ]
        if settings.PING_INTERVAL_S > 0:
            loops.append(("ping", ping_loop(runtime)))
            loops.append(("attach-ping", attach_ping_loop(runtime)))
        if settings.WORKER_CHECK_INTERVAL_S > 0:
            loops.append(("worker-check", worker_check_loop(runtime)))
        if settings.GC_INTERVAL_S > 0:
            loops.append(("garbage-collection", garbage_collection_loop()))
        for index in range(settings.OUTBOX_RELAY_TASKS):
            loops.append((f"outbox-relay-{index}", outbox_relay_loop(name=str(index))))
        if settings.CQRS_QUEUE and settings.CQRS_CONSUME_IN_SERVER:
            loops.append(("cqrs-consumer", cqrs_consumer_loop()))
        self.tasks = [asyncio.create_task(coro, name=name) for name, coro in loops]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("relay %s failed", task.get_name())
        self.tasks = []
        await stop_runtime()


def build_application() -> ASGIApp:
    app: ASGIApp = ProtocolTypeRouter(
        {
            "http": StaticFiles(get_asgi_application()),
            "websocket": token_auth_stack(URLRouter(websocket_urlpatterns)),
        }
    )
    if settings.ACCESS_LOG:
        app = AccessLog(app)
    return Lifespan(app)
