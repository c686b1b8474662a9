"""A write that meets a full disk under the database is answered 503 (try again later) with one
WARNING line, not a 500 with Django's HTML page and an ERROR traceback per request: the disk is a
condition of the machine (app/full_disk.py), not a defect of the operation."""

from __future__ import annotations

import logging

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI

from app.full_disk import disk_full

logger = logging.getLogger(__name__)

DISK_FULL = "the database's disk is full; try again later"
RETRY_AFTER_S = 5


def refuse_when_disk_full(api: NinjaAPI) -> None:
    """Answer an operation whose query failed on a full disk with 503 on every operation of ``api``."""

    # ninja's handler type admits the exception class too; only instances reach it.
    def handler(request: HttpRequest, exc: OperationalError | type[OperationalError]) -> HttpResponse:
        if not isinstance(exc, OperationalError) or not disk_full(exc):
            raise exc
        logger.warning("%s %s refused with 503, the database's disk is full: %s", request.method, request.path, exc)
        response = api.create_response(request, {"detail": DISK_FULL}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response

    api.add_exception_handler(OperationalError, handler)
