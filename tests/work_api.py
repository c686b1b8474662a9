"""Calls to the work API in process (Django's test client on the session database, every middleware
and the real views): status and JSON body. Fast, and settings such as quotas can be overridden per test.
Callers with the work app's model permissions, and workers with their keys."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

from app.work.models import Worker
from app.work.workers import register_worker
from tests.protocol import key_with, unique

API = "/api/v1"


def call(path: str, method: str = "GET", key: str | None = None, body: Any = None,
         client: Client | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """``path`` under /api/v1 (or a full path starting with it, as a ``next`` link is)."""
    sent = {**({"Authorization": f"Token {key}"} if key else {}), **(headers or {})}
    url = path if path.startswith(API) else API + path
    data = json.dumps(body) if body is not None else ""
    response = (client or Client()).generic(method, url, data, content_type="application/json", headers=sent)
    return response.status_code, json.loads(response.content) if response.content else None


def caller(*codenames: str) -> tuple[Any, str]:
    """A user with these ``work`` permissions (codenames without the app label) and a key of theirs."""
    return key_with(*(f"work.{codename}" for codename in codenames))


def submitter() -> tuple[Any, str]:
    """A user who may create work requests, and nothing more."""
    return caller("add_workrequest")


def worker_key(concurrency: int = 1, **metadata: Any) -> tuple[Worker, str]:
    """A registered worker (static metadata ``metadata``) and its key."""
    return register_worker(unique("worker"), concurrency=concurrency, static_metadata=metadata)


def create(key: str, task_name: str = "noop", **fields: Any) -> tuple[int, Any]:
    """POST /work-requests with ``task_data`` {} unless given."""
    return call("/work-requests", "POST", key, {"task_name": task_name, "task_data": {}, **fields})
