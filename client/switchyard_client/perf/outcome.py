"""How a run ended (Sans-I/O): the kind each failed message is counted under, and the exit code.

Errors during a run are counted, not fatal; the exit code then tells a script the worst of what
happened: messages refused (the broker's error acks), sends that got no ack in time, or nothing got
through at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchyard_client.cli import exits
from switchyard_client.errors import ClientClosed, ConnectionRefused, SendError, SendTimeout

TIMEOUT = "timeout"
CLOSED = "closed"
SERVER_ERROR = "server-error"


def kind_of(error: BaseException) -> str:
    """The key a failed message is counted under: the broker's result for an error ack
    (``send-error:8``), ``timeout``, ``refused (404)`` for a socket refused for good, ..."""
    if isinstance(error, SendError):
        return error.result
    if isinstance(error, SendTimeout | TimeoutError):
        return TIMEOUT
    if isinstance(error, ConnectionRefused):
        return f"refused ({error.status})"
    if isinstance(error, ClientClosed):
        return CLOSED
    return type(error).__name__


def exit_code(errors: Iterable[str], delivered: int, *, interrupted: bool) -> int:
    """The code for a run whose failed messages are of the kinds ``errors`` (one entry per kind seen)
    and in which ``delivered`` messages got through to the end (acked, or received)."""
    if interrupted:
        return exits.INTERRUPTED
    kinds = set(errors)
    if any(kind.startswith("refused") for kind in kinds):
        return exits.REFUSED
    if any(kind.startswith("send-error") for kind in kinds):
        return exits.REJECTED
    if TIMEOUT in kinds or delivered == 0:
        return exits.TIMEOUT
    if kinds:
        return exits.ERROR
    return exits.OK
