"""``switchyard-client produce | consume | read | request | status | watch | emit``: each command's
parser and handler live in the module named for what it does; this adds them in ``--help``'s order."""

from __future__ import annotations

from typing import Any

from switchyard_client.cli import calls, consume, produce, status


def register(subparsers: Any) -> None:
    """Add the commands to the root parser's ``subparsers``."""
    produce.add(subparsers)
    consume.add_consume(subparsers)
    consume.add_read(subparsers)
    calls.add_request(subparsers)
    status.add_status(subparsers)
    status.add_watch(subparsers)
    calls.add_emit(subparsers)
