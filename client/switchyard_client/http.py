"""The HTTP API calls the client makes (topic status, outbox emit): the standard library's HTTP
client on a worker thread, so the package needs no HTTP dependency."""

from __future__ import annotations

import asyncio
import http.client
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from switchyard_client import codec
from switchyard_client.errors import HTTPError, Unreachable
from switchyard_client.frames import Availability


class TopicStatus(BaseModel):
    """``GET /api/v1/topics/<topic>/status``: whether the topic's consumers answer pings."""

    topic: str
    status: Availability
    last_ping: datetime | None
    last_pong: datetime | None
    # The functions and classes the topic's backend module announced, when it did.
    api_info: dict[str, list[str]] | None = None


class Event(BaseModel):
    """An outbox event as the API answers it (CloudEvents attributes plus delivery state)."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str
    source: str
    status: str
    target: str


async def call(method: str, url: str, headers: dict[str, str], body: Any = None, *, timeout_s: float = 30.0,
               ok: tuple[int, ...] = (200, 201, 202, 204)) -> tuple[int, Any]:
    """``(status, parsed JSON body)``; a status outside ``ok`` raises ``HTTPError``."""
    return await asyncio.to_thread(_call, method, url, headers, body, timeout_s, ok)


def _call(method: str, url: str, headers: dict[str, str], body: Any, timeout_s: float,
          ok: tuple[int, ...]) -> tuple[int, Any]:
    data = None if body is None else codec.to_json_bytes(body)
    request = urllib.request.Request(url, data=data, method=method, headers={
        **headers, "Accept": "application/json", **({"Content-Type": "application/json"} if data else {}),
    })
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (OSError, http.client.HTTPException) as error:  # refused, no route, no answer in time, not HTTP
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise Unreachable(f"{method} {url}: {reason or type(error).__name__}") from error
    parsed = _parse(raw)
    if status not in ok:
        raise HTTPError(status, parsed)
    return status, parsed


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return codec.loads(raw)
    except codec.DecodeError:
        return raw.decode(errors="replace")
