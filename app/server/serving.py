"""Run Switchyard under uvicorn on a socket bound here: ``manage.py serve`` and ``manage.py runserver``.

The socket is bound before uvicorn starts so that a port that cannot be had ends in one clear line
(``ListenError``) instead of a traceback, and so that port 0 (a free port) can be told once bound.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import threading
from collections.abc import Callable

import uvicorn
from django.conf import settings

from app.server.access_log import UvicornHandshakeLines
from app.server.protocols import BoundedHttpToolsProtocol
from app.server.websocket_protocol import WebSocketProtocol

STARTUP_TIMEOUT_S = 60.0
# uvicorn's own log levels (--log-level of serve and runserver).
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LISTEN_BACKLOG = 2048

# What a failed bind means to someone starting the server, by errno.
_BIND_ERRORS = {
    errno.EADDRINUSE: "address already in use (another server running? use --port or PORT=)",
    errno.EACCES: "permission denied (ports below 1024 need root; use --port or PORT=)",
    errno.EADDRNOTAVAIL: "no such address on this machine (use --host or HOST=, e.g. 127.0.0.1 or 0.0.0.0)",
}


class ListenError(Exception):
    """The server cannot listen where it was asked to; the message says why, in one line."""


def describe_bind_error(host: str, port: int, exc: OSError | OverflowError) -> str:
    """One line saying where the server cannot listen and what to do about it."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        reason = "unknown host (use --host or HOST=, e.g. 127.0.0.1 or 0.0.0.0)"
    elif isinstance(exc, OverflowError):
        reason = "the port must be 0-65535 (use --port or PORT=)"
    else:
        reason = _BIND_ERRORS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
    return f"Switchyard cannot listen on {where}: {reason}"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); ``ListenError`` when there is none."""
    if not host.strip():
        # The socket API reads "" as every interface: exposing the server takes saying so (0.0.0.0, ::).
        raise ListenError("Switchyard needs a host to listen on: 127.0.0.1 for this machine, "
                          "0.0.0.0 or :: for every interface")
    host = host.strip().removeprefix("[").removesuffix("]")  # [::1], as in a URL
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except (OSError, OverflowError) as exc:
        sock.close()
        raise ListenError(describe_bind_error(host, port, exc)) from exc
    sock.set_inheritable(True)
    return sock


def raise_open_file_limit() -> None:
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


class GracefulStop:
    """Stops, from another thread, the server ``run`` serves: uvicorn catches SIGINT / SIGTERM only on
    the main thread, so a server run on another one (runserver's, under the autoreloader) is stopped
    through this, the way its signal handler would have: connections closed, then the lifespan
    shutdown (the group-commit writer flushes, leases are released)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._requested = False
        self._finished = threading.Event()

    def attach(self, server: uvicorn.Server) -> bool:
        """Whether ``server`` may start (no stop was asked for yet); it is the one a stop stops."""
        with self._lock:
            if self._requested:
                return False
            self._server = server
            return True

    def finished(self) -> None:
        self._finished.set()

    def __call__(self, timeout_s: float) -> bool:
        """Ask the server to shut down and wait for it (bounded): whether it finished in time."""
        with self._lock:
            self._requested = True
            server = self._server
        if server is None:
            return True
        server.should_exit = True
        return self._finished.wait(timeout_s)


def run(sock: socket.socket, *, log_level: str, on_ready: Callable[[str, int], None],
        stop: GracefulStop | None = None) -> None:
    """Serve on ``sock`` until uvicorn stops (SIGINT / SIGTERM, or ``stop``); ``on_ready(host, port)``
    once it accepts."""
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
        log_level=log_level,
        # Access lines come from app/server/access_log.py (masked query, duration, websockets too).
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    # Config has just set up uvicorn's loggers.
    logging.getLogger("uvicorn.error").addFilter(UvicornHandshakeLines())
    server = _Server(config)
    if stop is not None and not stop.attach(server):
        return
    # uvloop (and httptools) when installed: uvicorn.run would pick them, and so do we.
    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(_serve(server, sock, on_ready))
    except KeyboardInterrupt:
        # uvicorn shut down gracefully on Ctrl-C, then raised the signal again for whoever came
        # before it: asyncio's runner, which turns it into this. Nothing is left to do.
        pass
    finally:
        if stop is not None:
            stop.finished()


async def _serve(server: _Server, sock: socket.socket, on_ready: Callable[[str, int], None]) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait([task, ready], timeout=STARTUP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    # Waited for, not awaited: its cancellation is not ours to raise, while ours still is.
    await asyncio.wait([ready])
    if server.started:
        host, port = sock.getsockname()[:2]
        on_ready(host, port)
    await task


def banner(host: str, port: int) -> str:
    """What a person starting the server needs to find it; ends with the line tests read."""
    shown = f"[{host}]" if ":" in host else host
    http, ws = f"http://{shown}:{port}", f"ws://{shown}:{port}"
    return (
        f"Switchyard is serving on {shown}:{port} (Ctrl-C stops it)\n"
        f"  status page:  {http}/\n"
        f"  admin:        {http}/admin/\n"
        f"  API docs:     {http}/api/v1/docs\n"
        f"  health:       {http}/healthz\n"
        f"  DASF:         {ws}/ws/<topic>  (producer)\n"
        f"                {ws}/ws/<topic>/<subscription>  (consumer)\n"
        f"  Pulsar:       {ws}/ws/v2/producer/persistent/<tenant>/<namespace>/<topic>\n"
        f"                {ws}/ws/v2/consumer/persistent/<tenant>/<namespace>/<topic>/<subscription>\n"
        f"  status feed:  {ws}/ws/status/?topics=<topic>,<topic>\n"
        f"  workers:      {ws}/ws/workers/  (a worker's own token: manage.py createworker <name>)\n"
        f"SWITCHYARD_READY port={port}"
    )
