"""Calls to the HTTP API of a real server: status and JSON body (None for an empty answer); the pieces of
bulk requests (/api/v1/_bulk/)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.protocol import auth, key_with
from tests.servers import ServerProcess

API = "/api/v1"
BULK = "/_bulk/"


def call(server: ServerProcess, path: str, method: str = "GET", key: str | None = None,
         body: Any = None) -> tuple[int, Any]:
    """``path`` under /api/v1 (or a full path starting with it, as a ``next`` link is)."""
    headers = {**(auth(key) if key else {}), **({"Content-Type": "application/json"} if body is not None else {})}
    data = json.dumps(body).encode() if body is not None else None
    url = server.http + (path if path.startswith(API) else API + path)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def creator_key() -> str:
    """A token of a user who may create topics and tokens, and nothing else."""
    return key_with("broker.add_topic", "switchyard_auth.add_token")[1]


def create(name: str, **more: Any) -> dict[str, Any]:
    """A bulk operation creating the topic ``name``; ``more`` adds to it (``let``, ``headers``)."""
    return {"method": "post", "path": "topics", "data": {"name": name}, **more}


def statuses(results: list[dict[str, Any]]) -> list[int]:
    """The status of each of a bulk's results."""
    return [result["status"] for result in results]
