"""After-commit notices from the work transitions to the worker sockets of this process.

Transitions run on any thread (an HTTP view's worker thread, the admin, a worker socket's ORM
thread); the sockets live on the server's event loop. A transition that may have made work
runnable (a request created, retried or returned to pending, a dependency completed with success)
calls ``runnable`` inside its transaction; one that aborted a running request calls ``aborted``.
Each listener (the fleet of the serving process, app/work/fleet.py) is told on its own loop once,
and only if, the transaction commits, and passes the notice on to the other server processes.

A process with no listener (a management command, a shell) tells nobody: every server's worker
check (relays/workers.py, every WORKER_CHECK_INTERVAL_S) offers what such a process made runnable.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Protocol

from django.db import transaction


class Listener(Protocol):
    def runnable(self) -> None: ...

    def aborted(self, request_id: int, worker_id: int) -> None: ...


_lock = threading.Lock()
_listeners: dict[Listener, asyncio.AbstractEventLoop] = {}


def listen(listener: Listener, loop: asyncio.AbstractEventLoop) -> None:
    with _lock:
        _listeners[listener] = loop


def unlisten(listener: Listener) -> None:
    with _lock:
        _listeners.pop(listener, None)


def runnable() -> None:
    """Work may have become runnable: offer it once the current transaction commits."""
    if _listeners:
        transaction.on_commit(functools.partial(_tell, lambda listener: listener.runnable()))


def aborted(request_id: int, worker_id: int) -> None:
    """``request_id``, running on ``worker_id``, was aborted: tell that worker once this commits."""
    if _listeners:
        transaction.on_commit(functools.partial(_tell, lambda listener: listener.aborted(request_id, worker_id)))


def _tell(call: Callable[[Listener], None]) -> None:
    with _lock:
        listeners = list(_listeners.items())
    for listener, loop in listeners:
        try:
            # A fresh context: the caller's may be asgiref's worker-thread context, in which a task
            # the listener spawns would take its own database_sync_to_async call for a deadlock.
            loop.call_soon_threadsafe(call, listener, context=contextvars.Context())
        except RuntimeError:  # that loop has closed: its server is gone
            unlisten(listener)
