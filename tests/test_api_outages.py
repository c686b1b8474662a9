"""The HTTP API in an outage of the database (app/api/outages.py): 503, try again later."""

from __future__ import annotations

import logging

import psycopg
import pytest
from django.db import OperationalError
from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.testing import TestClient

from app.api.outages import DETAILS, RETRY_AFTER_S, refuse_during_outages
from app.outages import Outage
from tests.full_disk import fill_up
from tests.protocol import unique


def api_failing_with(failure: OperationalError | None) -> NinjaAPI:
    """An API of one operation, ``POST /write``, whose query fails (a full disk when ``failure`` is None)."""
    api = NinjaAPI(urls_namespace=unique("outages"))

    @api.post("/write")
    def write(request: HttpRequest) -> None:
        if failure is not None:
            raise failure
        fill_up()

    refuse_during_outages(api)
    return api


def unreachable() -> OperationalError:
    """The database unreachable, as Django raises it: its OperationalError from psycopg's."""
    try:
        raise OperationalError("the connection is closed") from psycopg.OperationalError("the connection is closed")
    except OperationalError as exc:
        return exc


def test_full_disk_is_a_503_and_a_warning_line(caplog: pytest.LogCaptureFixture):
    """A write meeting a full disk is answered 503 with Retry-After and logged as one WARNING, no traceback."""
    with caplog.at_level(logging.WARNING, logger="app.api.outages"):
        response = TestClient(api_failing_with(None)).post("/write")
    assert (response.status_code, response["Retry-After"]) == (503, str(RETRY_AFTER_S))
    assert response.json() == {"detail": DETAILS[Outage.DISK_FULL]}
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "the database's disk is full" in caplog.records[0].getMessage()


def test_unreachable_database_is_a_503_and_a_warning_line(caplog: pytest.LogCaptureFixture):
    """An operation meeting an unreachable database is answered 503 with Retry-After and one WARNING, no traceback."""
    with caplog.at_level(logging.WARNING, logger="app.api.outages"):
        response = TestClient(api_failing_with(unreachable())).post("/write")
    assert (response.status_code, response["Retry-After"]) == (503, str(RETRY_AFTER_S))
    assert response.json() == {"detail": "the database is unreachable; try again later"}
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "POST /write refused with 503, the database is unreachable" in caplog.records[0].getMessage()


def test_other_database_failures_stay_errors():
    """Any other OperationalError is not answered 503 here: it goes on to Django's 500 and ERROR."""
    with pytest.raises(OperationalError, match="database is locked"):
        TestClient(api_failing_with(OperationalError("database is locked"))).post("/write")
