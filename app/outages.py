"""Outages: conditions of the machine under the server, recognised in the errors the drivers raise.

A full disk under the database, an unreachable database and an unreachable Redis are met by every
write or read until they end. They are no defect of the code, and a traceback per failure (hundreds
in a ten-second outage) would say nothing more: the loops log one WARNING line when an outage starts
and one when it ends (``OutageLog``); a request refused during one is a WARNING line too. An error
that is none of these stays an ERROR with its traceback.

``outage(exc)`` is pure (no I/O): it reads only the exception and what it was raised from.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

import psycopg
import redis.exceptions

# SQLite's primary result code for a full disk, and PostgreSQL's SQLSTATE disk_full.
SQLITE_FULL = 13
POSTGRES_DISK_FULL = "53100"
# PostgreSQL's connection_exception class, and admin_shutdown, crash_shutdown, cannot_connect_now
# (the server is stopping, crashed, or still starting up).
POSTGRES_CONNECTION_CLASS = "08"
POSTGRES_SHUTDOWN = frozenset({"57P01", "57P02", "57P03"})
# A ConnectionError of redis-py's that is a refusal of our credentials or too small a pool: a
# defect of the configuration, not Redis being away.
REDIS_REFUSALS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
                  redis.exceptions.ExternalAuthProviderError, redis.exceptions.MaxConnectionsError)


class Outage(enum.Enum):
    """A condition of the machine; the value says it as it starts, ``ended`` as it ends."""

    DISK_FULL = "the database's disk is full"
    DATABASE_UNREACHABLE = "the database is unreachable"
    REDIS_UNREACHABLE = "Redis is unreachable"

    @property
    def ended(self) -> str:
        return _ENDED[self]


_ENDED = {
    Outage.DISK_FULL: "the database's disk has room again",
    Outage.DATABASE_UNREACHABLE: "the database is reachable again",
    Outage.REDIS_UNREACHABLE: "Redis is reachable again",
}


def _own_outage(error: BaseException) -> Outage | None:
    """What ``error`` itself (not what it wraps) says."""
    # The extended SQLite codes keep the primary one in their low byte.
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
        return Outage.DISK_FULL
    if isinstance(error, psycopg.Error):
        sqlstate = error.sqlstate
        if sqlstate == POSTGRES_DISK_FULL:
            return Outage.DISK_FULL
        # libpq's own failures (connection refused, "the connection is closed", "server closed the
        # connection unexpectedly") carry no SQLSTATE: the server never answered.
        if isinstance(error, psycopg.OperationalError) and sqlstate is None:
            return Outage.DATABASE_UNREACHABLE
        if sqlstate is not None and (sqlstate.startswith(POSTGRES_CONNECTION_CLASS) or sqlstate in POSTGRES_SHUTDOWN):
            return Outage.DATABASE_UNREACHABLE
        return None
    # BusyLoadingError (Redis restarting, loading its data) is a ConnectionError too.
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return None if isinstance(error, REDIS_REFUSALS) else Outage.REDIS_UNREACHABLE
    return None


def outage(exc: BaseException) -> Outage | None:
    """The outage ``exc``, or what it was raised from (Django re-raises the driver's error), says
    the server is in; None for any other failure."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = _own_outage(error)
        if found is not None:
            return found
        # Only what it was raised from: an error raised while handling an outage is another failure.
        error = error.__cause__
    return None


class OutageLog:
    """One loop's failures, logged to ``logger`` as ``name`` (e.g. "resync"): the first failure of an
    outage is one WARNING line naming it and the error, the next ones of the same outage log nothing,
    and the first success after it one WARNING saying it ended, after how many failures over how
    long. A failure that is no outage is logged as an ERROR with its traceback, each time: a defect.
    Plain state, no I/O of its own and no loop: the loop calls ``failed`` and ``succeeded``."""

    def __init__(self, logger: logging.Logger, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self.name = name
        self._clock = clock
        # Failures in a row (of any kind, for the caller's back-off), the outage they are in, since when.
        self.failures = 0
        self.current: Outage | None = None
        self._since = 0.0

    def failed(self, exc: BaseException, detail: str = "") -> Outage | None:
        """Count the failure ``exc`` and log it as above; its outage, or None. ``detail`` (e.g. " of
        12 ops") follows the name in the lines logged for this failure."""
        self.failures += 1
        found = outage(exc)
        if found is None:
            self._logger.error("%s%s failed (%d in a row)", self.name, detail, self.failures, exc_info=exc)
        elif found is not self.current:
            if self.current is None:
                self._since = self._clock()
            self.current = found
            self._logger.warning("%s%s failed, %s (logged again when it ends): %s", self.name, detail,
                                 found.value, exc)
        return found

    def succeeded(self) -> None:
        """The loop's step went through: an outage it was in has ended."""
        if self.current is not None:
            self._logger.warning("%s: %s after %d failures over %.1f s", self.name, self.current.ended,
                                 self.failures, self._clock() - self._since)
        self.failures = 0
        self.current = None
