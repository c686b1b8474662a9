"""``manage.py runserver [addr:]port``: Switchyard itself (uvicorn: HTTP and websockets) for development,
restarted by Django's autoreloader when the code changes.

Django's own runserver is a WSGI server: it served the pages but answered every websocket with 404.
This one keeps its arguments (``8001``, ``0.0.0.0:8000``, ``[::1]:8000``, ``--noreload``, ``--ipv6``,
``--skip-checks``) and runs what ``manage.py serve`` runs.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands.runserver import Command as DjangoRunserver
from django.db import connections
from django.utils import autoreload

from app.server.serving import ListenError, banner, bind, raise_open_file_limit, run


class Command(DjangoRunserver):
    help = ("Serve Switchyard (HTTP + websockets, as `manage.py serve` does) for development, restarting when "
            "the code changes. For production use `manage.py serve` (or `make serve`).")
    # Set by Django's handle() from the addrport argument.
    addr: str
    port: str

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--log-level", default="warning",
                            choices=("critical", "error", "warning", "info", "debug", "trace"),
                            help="uvicorn's own log level (default: %(default)s)")

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

        run(sock, log_level=options["log_level"], on_ready=ready)
