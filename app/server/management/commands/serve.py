"""``manage.py serve [--host H] [--port P] [--log-level L]``: run Switchyard under uvicorn.

Port 0 picks a free port; the line ``SWITCHYARD_READY port=N`` is printed once the server
accepts connections (tests read it). A port that cannot be had ends in one line on stderr, exit 1.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from app.server.serving import LOG_LEVELS, ListenError, banner, bind, raise_open_file_limit, run


class Command(BaseCommand):
    help = "Serve Switchyard (HTTP + websockets) with uvicorn."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1",
                            help="address to listen on; 0.0.0.0 or :: for every interface (default: %(default)s)")
        parser.add_argument("--port", type=int, default=8000,
                            help="port to listen on; 0 picks a free one (default: %(default)s)")
        parser.add_argument("--log-level", default="warning", choices=LOG_LEVELS,
                            help="uvicorn's own log level; Switchyard's log (and its access log) follows "
                                 "SWITCHYARD_LOG_LEVEL and ACCESS_LOG (default: %(default)s)")

    def handle(self, *args: Any, **options: Any) -> None:
        serve(self, options["host"], options["port"], options["log_level"])


def serve(command: BaseCommand, host: str, port: int, log_level: str) -> None:
    """Bind, serve until stopped, print the banner once ready; a bind error is one line and exit 1."""
    raise_open_file_limit()
    try:
        sock = bind(host, port)
    except ListenError as exc:
        command.stderr.write(str(exc))
        sys.exit(1)

    def ready(bound_host: str, bound_port: int) -> None:
        command.stdout.write(banner(bound_host, bound_port))
        command.stdout.flush()

    run(sock, log_level=log_level, on_ready=ready)
