"""Strings the database cannot take: PostgreSQL text holds no NUL (0x00) character, and psycopg
refuses one in any query parameter. A NUL in a path, query or body string is then the caller's
mistake (422), whichever operation it reached, rather than a 500. SQLite takes NUL, so there the same
request is served (a lookup finds nothing, a comment is stored as given).

JSON values the API stores as such (a work request's data, a worker's metadata) are refused on
every backend when PostgreSQL's ``jsonb`` could not hold them (``json_refusal``): a NUL in a string
or key (``\\u0000`` has no text form there) or a number that is not finite (Python's JSON reader
takes ``NaN``; JSON has no such number). Checked before anything is written, so the answer is the
same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
from typing import Any

from django.db import DataError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI

NUL_REFUSED = "strings may not contain the NUL (0x00) character"
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


def json_refusal(value: Any, where: str) -> str | None:
    """Why ``value`` (parsed from a request body, so no larger than one) cannot be stored as JSON
    on every backend, naming ``where``; None when it can."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return f"{where}: {NUL_REFUSED}"
        if isinstance(item, float) and not math.isfinite(item):
            return f"{where}: numbers must be finite (JSON has no NaN or Infinity)"
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
