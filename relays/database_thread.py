"""A loop's own database thread and connection.

Relay loops that query often (outbox claims, the announcement feed) must not queue behind the ORM
work of requests on the shared sync_to_async thread, nor pay its per-call connection health check.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connection

from app.broker.commit import close_thread_connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLOSE_TIMEOUT_S = 5.0


def _guarded(call: Callable[[], T]) -> T:
    try:
        return call()
    except (OperationalError, InterfaceError):
        connection.close()  # reconnect on the next call (e.g. after a PostgreSQL restart)
        raise


class DatabaseThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        bound = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, _guarded, bound)

    async def close(self) -> None:
        closing = asyncio.get_running_loop().run_in_executor(self._executor, close_thread_connection)
        # Bounded: a call still waiting on a database lock must not hold up shutdown; the thread
        # ends on its own once that call returns.
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
        if not done:
            logger.warning("the database thread %s was still busy at shutdown", self.name)
        self._executor.shutdown(wait=False)
