"""PostgreSQL ``LISTEN`` for outbox wake-ups, on a connection of its own (Django's connections
are synchronous and pooled per thread; a listener must sit on one connection and wait)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import connections

from app.outbox.retries import backoff_s
from app.outbox.wakeup import CHANNEL

logger = logging.getLogger(__name__)

# Django's own connection arguments; everything else is libpq's (TLS files, service, timeouts).
_DJANGO_ONLY = ("cursor_factory", "context", "prepare_threshold", "pool", "server_side_binding")


def listens(using: str = "default") -> bool:
    return connections[using].vendor == "postgresql"


def _connection_params(using: str) -> dict[str, Any]:
    params = connections[using].get_connection_params()
    return {k: v for k, v in params.items() if k not in _DJANGO_ONLY and v not in (None, "")}


async def listen(on_notify: Callable[[], None], using: str = "default") -> None:
    """Call ``on_notify`` for every notification (and after each (re)connect, for whatever was
    committed while nobody listened); reconnects with back-off; never returns."""
    params = _connection_params(using)
    failures = 0
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                failures = 0
                on_notify()
                async for _ in conn.notifies():
                    on_notify()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            logger.exception("outbox LISTEN connection failed (%d in a row)", failures)
            await asyncio.sleep(backoff_s(failures, 0.5, 30.0))
