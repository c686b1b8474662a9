"""Outages (app/outages.py): recognised in what the drivers raise, and logged as they start and end."""

from __future__ import annotations

import logging
import sqlite3

import psycopg
import psycopg.errors
import pytest
import redis
import redis.exceptions
from django.db import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.outages import Outage, OutageLog, outage
from consumers.refusals import database_failed
from tests.full_disk import fill_up

pytestmark = pytest.mark.database_agnostic

# Nothing listens on port 1 of the loopback: a connection is refused at once.
CLOSED_PORT = 1


def wrapped(error: BaseException) -> OperationalError:
    """``error`` as Django re-raises a driver's error: its own OperationalError, the driver's as the cause."""
    try:
        raise OperationalError(*error.args) from error
    except OperationalError as exc:
        return exc


def refused_by_postgres() -> psycopg.OperationalError:
    """The real error of a PostgreSQL connection refused (the server is down)."""
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(f"host=127.0.0.1 port={CLOSED_PORT} connect_timeout=5")
    return raised.value


def refused_by_redis() -> redis.exceptions.ConnectionError:
    """The real error of a Redis connection refused (the server is down)."""
    with pytest.raises(redis.exceptions.ConnectionError) as raised:
        # No retries: redis-py's default tries again for seconds.
        redis.Redis(host="127.0.0.1", port=CLOSED_PORT, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0)).ping()
    return raised.value


# --- recognising them ---------------------------------------------------------------------------


def test_sqlite_full_through_django_is_a_full_disk():
    """SQLite's SQLITE_FULL, wrapped by Django, is a full disk."""
    with pytest.raises(OperationalError) as raised:
        fill_up()
    assert outage(raised.value) is Outage.DISK_FULL


def test_postgres_disk_full_through_django_is_a_full_disk():
    """PostgreSQL's disk_full (SQLSTATE 53100), wrapped by Django, is a full disk."""
    assert outage(wrapped(psycopg.errors.DiskFull("could not extend file"))) is Outage.DISK_FULL


def test_a_refused_postgres_connection_through_django_is_the_database_unreachable():
    """libpq's "connection refused" (an OperationalError without SQLSTATE), wrapped by Django, is recognised."""
    error = refused_by_postgres()
    assert error.sqlstate is None
    assert outage(wrapped(error)) is Outage.DATABASE_UNREACHABLE


def test_a_lost_postgres_connection_is_the_database_unreachable():
    """psycopg's errors for a connection lost under it (no SQLSTATE) are recognised."""
    for text in ("the connection is closed", "consuming input failed: server closed the connection unexpectedly"):
        assert outage(wrapped(psycopg.OperationalError(text))) is Outage.DATABASE_UNREACHABLE


def test_postgres_shutting_down_or_starting_is_the_database_unreachable():
    """The SQLSTATEs of class 08 and 57P01/57P02/57P03 (shutdown, crash, cannot connect now) are recognised."""
    for error in (psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
                  psycopg.errors.CrashShutdown("terminating connection because of crash of another server process"),
                  psycopg.errors.CannotConnectNow("the database system is starting up"),
                  psycopg.errors.ConnectionException("connection exception"),
                  psycopg.errors.ConnectionFailure("connection failure")):
        assert outage(wrapped(error)) is Outage.DATABASE_UNREACHABLE, error.sqlstate


def test_other_database_errors_are_no_outage():
    """A locked SQLite, a statement cancelled, a constraint violated, a misused connection, or a bare
    OperationalError without the driver's error are no outage."""
    locked = sqlite3.OperationalError("database is locked")
    for error in (wrapped(locked), psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
                  psycopg.errors.UniqueViolation("duplicate key"), psycopg.InterfaceError("the cursor is closed"),
                  OperationalError("connection refused")):
        assert outage(error) is None, error


def test_a_refused_redis_connection_is_redis_unreachable():
    """redis-py's ConnectionError for a refused connection is recognised."""
    assert outage(refused_by_redis()) is Outage.REDIS_UNREACHABLE


def test_redis_restarting_or_silent_is_redis_unreachable():
    """Redis loading its data after a restart, or not answering in time, is recognised."""
    for error in (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
                  redis.exceptions.TimeoutError("Timeout reading from socket"),
                  redis.exceptions.ConnectionError("Connection closed by server.")):
        assert outage(error) is Outage.REDIS_UNREACHABLE, error


def test_redis_refusing_our_credentials_is_no_outage():
    """A wrong password or an exhausted pool is a defect of the configuration, not Redis being away."""
    for error in (redis.exceptions.AuthenticationError("invalid password"),
                  redis.exceptions.MaxConnectionsError("Too many connections"),
                  redis.exceptions.ResponseError("WRONGTYPE")):
        assert outage(error) is None, error


def test_a_failure_while_handling_an_outage_is_not_one():
    """An error raised while an outage was being handled (not from it) is a defect of its own."""
    try:
        try:
            raise refused_by_redis()
        except redis.exceptions.ConnectionError:
            raise AttributeError("a bug in the handler")  # noqa: B904 - the implicit context is the point
    except AttributeError as exc:
        assert exc.__context__ is not None and outage(exc) is None


# --- logging them -------------------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def outage_log() -> tuple[OutageLog, Clock]:
    clock = Clock()
    return OutageLog(logging.getLogger("tests.outages"), "resync", clock), clock


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, bool]]:
    return [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]


def test_an_outage_is_one_line_as_it_starts(caplog: pytest.LogCaptureFixture):
    """The first failure of an outage is one WARNING naming it and the error, no traceback; the next log nothing."""
    log, _ = outage_log()
    error = wrapped(psycopg.OperationalError("the connection is closed"))
    with caplog.at_level(logging.WARNING, logger="tests.outages"):
        for _ in range(3):
            assert log.failed(error) is Outage.DATABASE_UNREACHABLE
    assert lines(caplog) == [("WARNING", "resync failed, the database is unreachable (logged again when it ends): "
                                         "the connection is closed", False)]


def test_the_end_of_an_outage_is_one_line(caplog: pytest.LogCaptureFixture):
    """The first success after an outage is one WARNING saying how many failures over how long; the next log nothing."""
    log, clock = outage_log()
    for _ in range(3):
        log.failed(refused_by_redis())
        clock.now += 2.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tests.outages"):
        log.succeeded()
        log.succeeded()
    assert lines(caplog) == [("WARNING", "resync: Redis is reachable again after 3 failures over 6.0 s", False)]


def test_a_failure_that_is_no_outage_is_an_error_each_time(caplog: pytest.LogCaptureFixture):
    """An unknown failure is an ERROR with its traceback every time: a defect, not a condition of the machine."""
    log, _ = outage_log()
    with caplog.at_level(logging.WARNING, logger="tests.outages"):
        assert log.failed(KeyError("a bug"), " of 2 ops") is None
        assert log.failed(KeyError("a bug"), " of 2 ops") is None
        log.succeeded()
    assert lines(caplog) == [("ERROR", "resync of 2 ops failed (1 in a row)", True),
                             ("ERROR", "resync of 2 ops failed (2 in a row)", True)]


def test_another_outage_meanwhile_is_a_line_of_its_own(caplog: pytest.LogCaptureFixture):
    """An outage that follows another without a success between is logged as it starts; the end names the last."""
    log, _ = outage_log()
    with caplog.at_level(logging.WARNING, logger="tests.outages"):
        log.failed(wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")))
        log.failed(wrapped(psycopg.errors.DiskFull("could not extend file")))
        log.failed(wrapped(psycopg.errors.DiskFull("could not extend file")))
        log.succeeded()
    assert [message.split(" (")[0] for _, message, _ in lines(caplog)] == [
        "resync failed, the database is unreachable", "resync failed, the database's disk is full",
        "resync: the database's disk has room again after 3 failures over 0.0 s"]


def test_an_outage_after_the_end_of_one_starts_again(caplog: pytest.LogCaptureFixture):
    """After the end line, the next failure of the same outage is logged as a new start."""
    log, _ = outage_log()
    error = refused_by_redis()
    with caplog.at_level(logging.WARNING, logger="tests.outages"):
        log.failed(error)
        log.succeeded()
        log.failed(error)
    assert [message.split(" ")[:3] for _, message, _ in lines(caplog)] == [
        ["resync", "failed,", "Redis"], ["resync:", "Redis", "is"], ["resync", "failed,", "Redis"]]


def test_failures_in_a_row_count_for_back_off():
    """Every failure counts (outage or not) until a success resets the count."""
    log, _ = outage_log()
    log.failed(refused_by_redis())
    log.failed(KeyError("a bug"))
    assert log.failures == 2
    log.succeeded()
    assert (log.failures, log.current) == (0, None)


# --- handshakes ---------------------------------------------------------------------------------


def test_handshake_meeting_an_unreachable_database_is_a_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    """A handshake refused because the database is unreachable: 503 naming it, one WARNING, no traceback."""
    with caplog.at_level(logging.WARNING, logger="consumers.refusals"):
        refusal = database_failed(wrapped(refused_by_postgres()))
    assert (refusal.status, refusal.reason) == (503, "the database is unreachable; try again")
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]


def test_handshake_meeting_a_database_defect_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A handshake whose query fails for another reason (a table gone) is still a 503, logged as an ERROR
    with its traceback: an OperationalError is no outage by itself."""
    with caplog.at_level(logging.WARNING, logger="consumers.refusals"):
        refusal = database_failed(wrapped(sqlite3.OperationalError("no such table: broker_topic")))
    assert (refusal.status, refusal.reason) == (503, "the database failed; try again")
    assert [r.levelname for r in caplog.records] == ["ERROR"] and caplog.records[0].exc_info is not None
