"""Waking relays in this process when a transaction that emitted events commits.

Emitters run on any thread (sync views, ``sync_to_async`` workers); relays wait on their event
loop. Relays in other processes are woken by PostgreSQL notifications or their polling.
"""

from __future__ import annotations

import asyncio
import threading

from django.db import connections, transaction

CHANNEL = "switchyard_outbox"

_lock = threading.Lock()
_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()


def register(event: asyncio.Event) -> None:
    with _lock:
        _waiters.add((asyncio.get_running_loop(), event))


def unregister(event: asyncio.Event) -> None:
    with _lock:
        for waiter in [w for w in _waiters if w[1] is event]:
            _waiters.discard(waiter)


def wake() -> None:
    with _lock:
        waiters = list(_waiters)
    for loop, event in waiters:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # that loop has closed; its relay is gone
            unregister(event)


def notify_relays(using: str = "default") -> None:
    """Wake relays everywhere once the current transaction commits (call inside it)."""
    if connections[using].vendor == "postgresql":
        # Delivered when (and only if) the transaction commits; relays in other processes
        # LISTEN for it. Repeats within one transaction are folded into one by PostgreSQL.
        with connections[using].cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")
    transaction.on_commit(wake, using=using)
