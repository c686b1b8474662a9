"""``manage.py runserver [addr:]port``: Switchyard itself (uvicorn: HTTP and websockets) for development,
restarted by Django's autoreloader when the code changes.

Django's own runserver is a WSGI server: it served the pages but answered every websocket with 404.
This one keeps its arguments (``8001``, ``0.0.0.0:8000``, ``[::1]:8000``, ``--noreload``, ``--ipv6``,
``--skip-checks``) and runs what ``manage.py serve`` runs.

Django's reloader serves on a thread of its own, where uvicorn cannot catch signals, and its parent
process SIGKILLs the server when it gets a SIGTERM. Here a SIGTERM, a Ctrl-C or a code change stops
the server gracefully (sockets closed with 1012, acks still queued committed, leases released)
before the process exits or restarts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands.runserver import Command as DjangoRunserver
from django.db import connections
from django.utils import autoreload

from app.server.serving import (
    LOG_LEVELS,
    GracefulStop,
    ListenError,
    banner,
    bind,
    raise_open_file_limit,
    run,
)

# uvicorn's own graceful shutdown takes up to 10 s for the connections, then the lifespan's.
SHUTDOWN_TIMEOUT_S = 20.0
# What Django's reloader process exits with to be started again.
RELOAD_EXIT_CODE = 3


class Command(DjangoRunserver):
    help = ("Serve Switchyard (HTTP + websockets, as `manage.py serve` does) for development, restarting when "
            "the code changes. For production use `manage.py serve` (or `make serve`).")
    # Set by Django's handle() from the addrport argument.
    addr: str
    port: str
    # Under the reloader: how the reloader's (main) thread stops the server thread.
    stop: GracefulStop | None = None

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--log-level", default="warning",
                            choices=LOG_LEVELS,
                            help="uvicorn's own log level (default: %(default)s)")

    def run(self, **options: Any) -> None:
        if not options["use_reloader"]:
            # On the main thread uvicorn handles the signals itself.
            self.inner_run(None, **options)
        elif os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true":
            self.serve_until_reload(**options)
        else:
            sys.exit(supervise())

    def serve_until_reload(self, **options: Any) -> None:
        """Django's reloader process (``run_with_reloader``), with a graceful stop on the way out."""
        stop = self.stop = GracefulStop()
        stopping = exit_once()
        reloader = autoreload.get_reloader()
        autoreload.logger.info("Watching for file changes with %s", reloader.__class__.__name__)
        try:
            # Returns or raises SystemExit: 3 on a code change, 0 on SIGTERM / SIGINT.
            autoreload.start_django(reloader, self.inner_run, **options)
        finally:
            # A code change ends the loop with sys.exit(3): from here on a signal must not cut short
            # the stop either.
            stopping()
            # Here, before the interpreter's exit: it stops the thread pools the shutdown uses.
            if not stop(SHUTDOWN_TIMEOUT_S):
                self.stderr.write(f"the server did not stop within {SHUTDOWN_TIMEOUT_S:.0f} s")

    def inner_run(self, *args: Any, **options: Any) -> None:
        # An error silenced in the reloader's parent (say, a syntax error) is raised here, in the child.
        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            self.check(display_num_errors=True)
        self.check_migrations()
        for conn in connections.all(initialized_only=True):
            conn.close()
        raise_open_file_limit()
        try:
            sock = bind(self.addr, int(self.port))
        except ListenError as exc:
            self.stderr.write(str(exc))
            # This runs in the reloader's thread, where sys.exit would only end the thread.
            os._exit(1)

        def ready(host: str, port: int) -> None:
            reloads = "restarts when the code changes" if options["use_reloader"] else "does not reload"
            self.stdout.write(f"Development server ({reloads}); for production: manage.py serve\n"
                              + banner(host, port))
            self.stdout.flush()

        run(sock, log_level=options["log_level"], on_ready=ready, stop=self.stop)


def exit_once() -> Callable[[], None]:
    """SIGTERM and SIGINT end the reloader's loop, once: a second one (a Ctrl-C reaches both
    processes, and the parent passes it on) must not cut the graceful stop short. Returns what
    marks the stop as begun otherwise (a code change)."""
    stopping = False

    def begin() -> None:
        nonlocal stopping
        stopping = True

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            begin()
            sys.exit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return begin


def supervise() -> int:
    """Django's reloader parent (``restart_with_reloader``): run the server process again while it exits
    with 3. A SIGTERM or SIGINT is passed on to it and waited for, where Django's would SIGKILL it; a
    second one kills it (a server that hangs while stopping can still be ended with Ctrl-C)."""
    args = autoreload.get_child_arguments()
    env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
    stopping: int | None = None
    child: subprocess.Popen[bytes] | None = None

    def pass_on(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if child is None:
            stopping = signum
        elif stopping is None:
            stopping = signum
            child.send_signal(signum)
        else:
            # Asked again while the server stops (a second Ctrl-C): it may hang, end it now.
            child.kill()

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    while True:
        if stopping is not None:
            # The signal came while the previous process was being replaced: start no other.
            return 128 + stopping
        child = subprocess.Popen(args, env=env, close_fds=False)
        code = child.wait()
        if code != RELOAD_EXIT_CODE or stopping is not None:
            return code
