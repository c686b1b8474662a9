"""Transitions run again when PostgreSQL rolled them back as one side of a deadlock.

Dependents are locked in id order and outbox keys in sorted order, but a transitive cascade, a
retried subtree, a submit's dependencies or a worker's released requests can still cross another
transition's order; a transition is a set of guarded UPDATEs in one transaction, so running it again
is safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection

# PostgreSQL's "deadlock detected".
DEADLOCK_SQLSTATE = "40P01"
DEADLOCK_ATTEMPTS = 5

T = TypeVar("T")


def retrying_deadlocks(body: Callable[[], T]) -> T:
    """Run a transition (its own transaction) again when PostgreSQL rolled it back as one side of a
    deadlock. Inside a caller's transaction nothing can be run again: the error is the caller's."""
    attempt = 1
    while True:
        try:
            return body()
        except OperationalError as exc:
            deadlock = getattr(exc.__cause__, "sqlstate", None) == DEADLOCK_SQLSTATE
            if not deadlock or connection.in_atomic_block or attempt >= DEADLOCK_ATTEMPTS:
                raise
            attempt += 1
