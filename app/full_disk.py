"""Recognising a full disk under the database in the errors the drivers raise.

A full disk is a condition of the machine, met by every write until space returns: the places that
log database failures log it as one WARNING line, without the traceback, which would say nothing
more hundreds of times (an ERROR with its traceback stays for what is a defect).
"""

from __future__ import annotations

# SQLite's primary result code for a full disk, and PostgreSQL's SQLSTATE disk_full.
SQLITE_FULL = 13
POSTGRES_DISK_FULL = "53100"


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or what it wraps (Django re-raises the driver's error), says the disk under
    the database is full."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        # The extended SQLite codes keep the primary one in their low byte.
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
            return True
        if getattr(error, "sqlstate", None) == POSTGRES_DISK_FULL:
            return True
        # Only what it was raised from: an error raised while handling a full disk is another failure.
        error = error.__cause__
    return False
