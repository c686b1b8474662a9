"""Error bodies and response examples for the OpenAPI document.

Every refusal is ``{"detail": "<reason>"}`` (ninja's ``HttpError``); validation errors (422) carry
ninja's list of problems instead, or a reason of ours.
"""

from __future__ import annotations

from typing import Any

from ninja import Schema


class ErrorOut(Schema):
    detail: Any


ERRORS: dict[int, tuple[str, str]] = {
    # ninja's own answer to a body that does not parse; operations of ours may refuse a request with it too.
    400: ("the body is not JSON, or the operation does not apply to this resource", "Cannot parse request body"),
    401: ("the Authorization header names no enabled token of an active user",
          "invalid token (Authorization: Token <key> names no enabled token of an active user)"),
    403: ("the caller lacks the right (or a session write lacks its CSRF token)",
          "needs the broker.change_topic permission"),
    404: ("missing, or not visible to the caller (both answer alike)", "topic sensors-7 does not exist"),
    409: ("conflicts with the current state", "topic sensors-7 exists"),
    422: ("the request is invalid", "cursor: not a cursor of this list (pass next_cursor as it came)"),
}


def responses(ok: int, example: Any, *errors: int, details: dict[int, str] | None = None,
              request: Any = None, others: dict[int, Any] | None = None,
              descriptions: dict[int, str] | None = None) -> tuple[dict[int, Any], dict[str, Any]]:
    """The ``response`` map of an operation whose success schema is given separately, and its
    ``openapi_extra``: an example of the success body (None for an empty answer), of each error's
    (``details`` replaces the generic example's reason for this operation), of the request body
    (``request``) and of other answers with a schema of their own (``others``: status -> example;
    ``descriptions`` says when the success or such an answer comes, instead of the status's name)."""
    schemas: dict[int, Any] = {code: ErrorOut for code in errors}
    documented: dict[int, Any] = {}
    for code, shown in ((ok, example), *(others or {}).items()):
        if shown is not None:
            documented[code] = {"content": {"application/json": {"example": shown}}}
        if code in (descriptions or {}):
            documented.setdefault(code, {})["description"] = (descriptions or {})[code]
    for code in errors:
        description, detail = ERRORS[code]
        detail = (details or {}).get(code, detail)
        documented[code] = {
            "description": description, "content": {"application/json": {"example": {"detail": detail}}},
        }
    extra: dict[str, Any] = {"responses": documented}
    if request is not None:
        extra["requestBody"] = {"content": {"application/json": {"example": request}}}
    return schemas, extra
