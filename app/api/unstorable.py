"""Strings the database cannot take: PostgreSQL text holds no NUL (0x00) character, and psycopg
refuses one in any query parameter. A NUL in a path, query or body string is then the caller's
mistake (422), whichever operation it reached, rather than a 500. SQLite takes NUL, so there the same
request is served (a lookup finds nothing, a comment is stored as given).

JSON values stored as such (a work request's data, a worker's metadata) are refused on every backend
when PostgreSQL's ``jsonb`` could not hold them: app/codec.py ``json_refusal``.
"""

from __future__ import annotations

from django.db import DataError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI

from app.codec import NUL_REFUSED

# psycopg's words when a parameter holds one (psycopg.DataError, wrapped by Django's DataError).
_PSYCOPG_NUL = "cannot contain NUL (0x00)"


def refuse_nul(api: NinjaAPI) -> None:
    """Answer a query that failed on a NUL character with 422 on every operation of ``api``."""

    # ninja's handler type admits the exception class too; only instances reach it.
    def handler(request: HttpRequest, exc: DataError | type[DataError]) -> HttpResponse:
        if _PSYCOPG_NUL not in str(exc):
            raise exc
        return api.create_response(request, {"detail": NUL_REFUSED}, status=422)

    api.add_exception_handler(DataError, handler)
