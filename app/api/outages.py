"""An operation whose query meets an outage of the database (its disk full, the server unreachable)
is answered 503 (try again later) with one WARNING line, not a 500 with Django's HTML page and an
ERROR traceback per request: an outage is a condition of the machine (app/outages.py), not a defect
of the operation."""

from __future__ import annotations

import logging

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI

from app.outages import Outage, outage

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
# What the client is told, per outage of the database.
DETAILS = {
    Outage.DISK_FULL: "the database's disk is full; try again later",
    Outage.DATABASE_UNREACHABLE: "the database is unreachable; try again later",
}


def refuse_during_outages(api: NinjaAPI) -> None:
    """Answer an operation of ``api`` whose query failed in an outage of the database with 503."""

    # ninja's handler type admits the exception class too; only instances reach it.
    def handler(request: HttpRequest, exc: OperationalError | type[OperationalError]) -> HttpResponse:
        found = outage(exc) if isinstance(exc, OperationalError) else None
        if found is None or found not in DETAILS:
            raise exc
        logger.warning("%s %s refused with 503, %s: %s", request.method, request.path, found.value, exc)
        response = api.create_response(request, {"detail": DETAILS[found]}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response

    api.add_exception_handler(OperationalError, handler)
