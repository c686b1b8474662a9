"""``manage.py serve [--host H] [--port P]``: run Switchyard under uvicorn.

Port 0 picks a free port; the line ``SWITCHYARD_READY port=N`` is printed once the server
accepts connections (tests read it).
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from app.server.protocols import BoundedHttpToolsProtocol, WebSocketProtocol

STARTUP_TIMEOUT_S = 60.0


def _raise_open_file_limit() -> None:
    """Each websocket is a file descriptor; the usual soft limit of 1024 would cap connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Server(uvicorn.Server):
    """uvicorn's server, telling when it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()


class Command(BaseCommand):
    help = "Serve Switchyard (HTTP + websockets) with uvicorn."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--log-level", default="warning")

    def handle(self, *args: Any, **options: Any) -> None:
        _raise_open_file_limit()
        sock = socket.socket(socket.AF_INET6 if ":" in options["host"] else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((options["host"], options["port"]))
        sock.listen(2048)
        sock.set_inheritable(True)
        config = uvicorn.Config(
            "settings.asgi:application",
            lifespan="on",
            # Bounds on the request head and the handshake (app/server/protocols.py). The sans-I/O
            # websocket protocol reads one message at a time (it stops reading until the
            # application takes it), so uvicorn's ws_max_queue, which it does not use, holds nothing.
            http=BoundedHttpToolsProtocol,
            ws=WebSocketProtocol,
            ws_max_size=settings.WS_HARD_LIMIT_BYTES,
            ws_per_message_deflate=settings.WS_PER_MESSAGE_DEFLATE,
            log_level=options["log_level"],
            timeout_graceful_shutdown=10,
        )
        # uvloop (and httptools) when installed: uvicorn.run would pick them, and so do we.
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(self._serve(_Server(config), sock))

    async def _serve(self, server: _Server, sock: socket.socket) -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait([task, ready], timeout=STARTUP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if server.started:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self.stdout.write(
                f"Switchyard is serving\n"
                f"  websockets: ws://{shown}:{port}/ws/<topic>  (consumers: ws://{shown}:{port}/ws/<topic>/<subscription>)\n"
                f"  admin:      http://{shown}:{port}/admin/\n"
                f"SWITCHYARD_READY port={port}"
            )
            sys.stdout.flush()
        await task
