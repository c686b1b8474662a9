"""Handshakes answered with an HTTP status instead of a websocket (the 429 of the admission
limits, and on the Pulsar paths every refusal: docs/architecture.md 18.2)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from django.db import DatabaseError, InterfaceError

from app import codec
from app.broker.admission import Refusal
from app.outages import outage
from consumers.frames import HandshakeRefusal

logger = logging.getLogger(__name__)


async def send_refusal(send: Any, refusal: Refusal) -> None:
    """Answer a handshake (whose ``websocket.connect`` was received) with ``refusal``: its status
    and a JSON body ``{"error": reason}`` (a server without the ASGI extension sends 403)."""
    body = codec.dump_model(HandshakeRefusal(error=refusal.reason))
    headers = [(b"content-type", b"application/json")]
    if refusal.status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE):
        headers.append((b"retry-after", b"1"))
    try:
        await send({"type": "websocket.http.response.start", "status": int(refusal.status), "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body.encode()})
    except OSError:
        # Refused clients often leave first (ASGI servers raise an OSError subclass then).
        logger.debug("the client left before its refusal was sent", exc_info=True)


# What a database that fails during a handshake raises (InterfaceError is no DatabaseError).
DATABASE_ERRORS = (DatabaseError, InterfaceError)


def database_failed(exc: Exception) -> Refusal:
    """The 503 answering a handshake whose lookups failed in the database (the client retries),
    rather than the ASGI server's bare 403 for a handshake closed unanswered. An outage (the
    database unreachable, its disk full: app/outages.py) is logged without a traceback, since
    during one every handshake meets it; any other failure is a defect, logged with its traceback."""
    found = outage(exc)
    if found is None:
        logger.error("handshake refused with 503, the database failed", exc_info=exc)
        return Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "the database failed; try again")
    logger.warning("handshake refused with 503, %s: %s", found.value, exc)
    return Refusal(HTTPStatus.SERVICE_UNAVAILABLE, f"{found.value}; try again")
