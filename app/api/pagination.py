"""Cursor pagination for every list of the API: keyset on one unique, ordered field.

A page holds the rows after the cursor's key, so rows inserted or deleted meanwhile never shift a
walk: each row present throughout is seen exactly once. The cursor is opaque to clients (base64 of
the list's name and the last key); a cursor of another list, or garbage, is a 422.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Field as ModelField
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from ninja import Field, Schema
from ninja.errors import HttpError

from app import codec

# A forged cursor's key must still be a value the database takes: a signed 64-bit integer, or
# text without NUL (PostgreSQL refuses it in text).
KEY_RANGE = range(-(2**63), 2**63)
CURSOR_REFUSED = "cursor: not a cursor of this list (pass next_cursor as it came)"

PAGE_DEFAULT = 50
PAGE_MAX = 200
# Rows read at a time for a list whose rows are weighed (they may be large).
WEIGHED_CHUNK = 10

M = TypeVar("M", bound=Model)


class PageParams(Schema):
    cursor: str | None = Field(None, description="the `next_cursor` of the previous page; omit for the first")
    limit: int = Field(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description=f"items per page (1-{PAGE_MAX})")


class PageOut(Schema):
    """Where a list goes on: each list's page schema adds its ``items``."""

    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")
    next: str | None = Field(description="the URL of the next page; null on the last")


@dataclass(frozen=True, slots=True)
class Slice(Generic[M]):
    rows: list[M]
    next_cursor: str | None
    # The request's own URL with the next cursor: what a client follows to walk every page.
    next: str | None


def encode_cursor(name: str, key: Any) -> str:
    return base64.urlsafe_b64encode(codec.dumps_bytes([name, key])).decode().rstrip("=")


def decode_cursor(name: str, cursor: str) -> Any:
    try:
        found = codec.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, codec.DecodeError):
        found = None
    if not (isinstance(found, list) and len(found) == 2 and found[0] == name):
        raise HttpError(422, CURSOR_REFUSED)
    return found[1]


def _cursor_key(field: ModelField[Any, Any], value: Any) -> Any:
    """``value`` as ``field`` holds it; a 422 for one it cannot hold (the cursor was made up)."""
    try:
        key = field.to_python(value)
    except ValidationError:
        key = None
    if (isinstance(key, int) and key in KEY_RANGE) or (isinstance(key, str) and "\x00" not in key):
        return key
    raise HttpError(422, CURSOR_REFUSED)


def keyset_page(request: HttpRequest, rows: QuerySet[M], key: str, params: PageParams,
                weigh: Callable[[M], int] | None = None, max_weight: int = 0) -> Slice[M]:
    """The page of ``rows`` (ordered by the unique field ``key``) after ``params.cursor``. The
    cursor is tied to the request's path, so one list's cursor cannot page another. With
    ``weigh``, the page also ends before the row that would take it past ``max_weight`` (one
    row always goes): rows are read a few at a time, so big rows never sit in memory by the
    hundred."""
    name = request.path
    if params.cursor is not None:
        field = rows.model._meta.pk if key == "pk" else rows.model._meta.get_field(key)
        assert isinstance(field, ModelField), key  # a keyset key is a column of the rows
        rows = rows.filter(**{f"{key}__gt": _cursor_key(field, decode_cursor(name, params.cursor))})
    page: list[M] = []
    weight = 0
    more = False
    for row in rows.order_by(key)[: params.limit + 1].iterator(chunk_size=WEIGHED_CHUNK if weigh else PAGE_MAX + 1):
        weight += weigh(row) if weigh is not None else 0
        if len(page) == params.limit or (page and weigh is not None and weight > max_weight):
            more = True
            break
        page.append(row)
    if not more:
        return Slice(page, None, None)
    cursor = encode_cursor(name, getattr(page[-1], key))
    query = request.GET.copy()
    query["cursor"] = cursor
    return Slice(page, cursor, f"{request.path}?{query.urlencode()}")
