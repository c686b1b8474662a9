"""Handshakes answered with an HTTP status instead of a websocket (the 429 of the admission
limits, and on the Pulsar paths every refusal: docs/architecture.md 18.2)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from app import codec
from app.broker.admission import Refusal
from consumers.frames import HandshakeRefusal

logger = logging.getLogger(__name__)


async def send_refusal(send: Any, refusal: Refusal) -> None:
    """Answer a handshake (whose ``websocket.connect`` was received) with ``refusal``: its status
    and a JSON body ``{"error": reason}`` (a server without the ASGI extension sends 403)."""
    body = codec.dump_model(HandshakeRefusal(error=refusal.reason))
    headers = [(b"content-type", b"application/json")]
    if refusal.status is HTTPStatus.TOO_MANY_REQUESTS:
        headers.append((b"retry-after", b"1"))
    try:
        await send({"type": "websocket.http.response.start", "status": int(refusal.status), "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body.encode()})
    except OSError:
        # Refused clients often leave first (ASGI servers raise an OSError subclass then).
        logger.debug("the client left before its refusal was sent", exc_info=True)
