"""The HTTP API on a full disk under the database (app/api/disk_full.py): 503, try again later."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError
from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.testing import TestClient

from app.api.disk_full import DISK_FULL, RETRY_AFTER_S, refuse_when_disk_full
from tests.full_disk import fill_up
from tests.protocol import unique


def api_failing_with(failure: OperationalError | None) -> NinjaAPI:
    """An API of one operation, ``POST /write``, whose query fails (a full disk when ``failure`` is None)."""
    api = NinjaAPI(urls_namespace=unique("disk-full"))

    @api.post("/write")
    def write(request: HttpRequest) -> None:
        if failure is not None:
            raise failure
        fill_up()

    refuse_when_disk_full(api)
    return api


def test_full_disk_is_a_503_and_a_warning_line(caplog: pytest.LogCaptureFixture):
    """A write meeting a full disk is answered 503 with Retry-After and logged as one WARNING, no traceback."""
    with caplog.at_level(logging.WARNING, logger="app.api.disk_full"):
        response = TestClient(api_failing_with(None)).post("/write")
    assert (response.status_code, response["Retry-After"]) == (503, str(RETRY_AFTER_S))
    assert response.json() == {"detail": DISK_FULL}
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]


def test_other_database_failures_stay_errors():
    """Any other OperationalError is not answered 503 here: it goes on to Django's 500 and ERROR."""
    with pytest.raises(OperationalError, match="database is locked"):
        TestClient(api_failing_with(OperationalError("database is locked"))).post("/write")
