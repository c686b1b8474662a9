"""What the client raises. Every error is a ``SwitchyardError``; timeouts are also ``TimeoutError``."""

from __future__ import annotations

from typing import Any, Literal


class SwitchyardError(Exception):
    """Base of every error this package raises."""


class ConnectionRefused(SwitchyardError):
    """The server refused a socket for good: a handshake answered with an HTTP status that trying again
    will not change (400, 401, 403, 404), or a DASF-path close with 4403 / 4404."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"{url}: refused ({status}) {reason}".rstrip())
        self.url = url
        self.status = status
        self.reason = reason


class WorkerRejected(ConnectionRefused):
    """The worker socket rejected the worker's token (``connection_rejected``, then close 4401):
    ``reason_code`` is ``TOKEN_MISSING``, ``TOKEN_UNKNOWN`` or ``TOKEN_DISABLED``."""

    def __init__(self, url: str, reason_code: str, reason: str) -> None:
        super().__init__(url, 4401, f"{reason_code}: {reason}")
        self.reason_code = reason_code


class WorkFailed(SwitchyardError):
    """Raised by a worker's handler: the request completes with ``result`` (``failure``, or ``error``
    when it could not be run at all) and ``output_data`` as given. Any other exception completes it as
    ``failure`` with the exception's text."""

    def __init__(self, output_data: Any = None, *, result: Literal["failure", "error"] = "failure") -> None:
        super().__init__(f"{result}: {output_data!r}")
        self.output_data = output_data
        self.result = result


class SendError(SwitchyardError):
    """The broker refused a message: its ack's ``result`` was not ``ok`` (e.g. ``send-error:3``)."""

    def __init__(self, result: str, message: str | None = None, message_id: str | None = None) -> None:
        super().__init__(f"{result}: {message}" if message else result)
        self.result = result
        self.message = message
        self.message_id = message_id


class ServerError(SwitchyardError):
    """The broker sent an error frame on a consumer or reader socket (e.g. an ack of an unknown id)."""

    def __init__(self, result: str, message: str) -> None:
        super().__init__(f"{result}: {message}")
        self.result = result
        self.message = message


class RequestError(SwitchyardError):
    """A DASF backend module answered a request with ``status: error``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HTTPError(SwitchyardError):
    """An HTTP API call answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.body = body


class Unreachable(SwitchyardError, ConnectionError):
    """The server could not be reached: nothing accepted a connection at its address (refused, no
    route, name not resolved) within the connect timeout, or an HTTP API call got no answer."""


class ClientClosed(SwitchyardError):
    """The client, producer or consumer was closed while the call waited."""


class FrameTooLarge(SwitchyardError):
    """The broker sent a frame larger than the client's ``max_frame_bytes``: it would send it again on
    every connection, so the socket ends instead."""


class ConnectTimeout(SwitchyardError, TimeoutError):
    """No connection could be opened within ``connect_timeout_s`` (the message says why the last
    attempt failed)."""


class SendTimeout(SwitchyardError, TimeoutError):
    """No ack came within the send's timeout (the message may still have been stored)."""


class RequestTimeout(SwitchyardError, TimeoutError):
    """No response to a DASF request came within its timeout."""
