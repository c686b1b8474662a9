"""Bulk requests: ``/api/v1/_bulk/`` runs a JSON list of API operations in one request, in order.

``POST`` runs them all in one database transaction and stops at the first that fails (a status
outside 100-399): everything is rolled back and the answer is 502 with the results so far.
``PUT`` runs them one after another without a transaction of its own (each as a direct request
would) and answers 200 with every result. An operation may use earlier results (app/api/references.py).

Each operation is a request of its own, answered by the same view a direct request reaches
(app/api/subrequests.py), as the bulk's caller: its credentials are looked up again for each
operation, so a token an earlier operation disabled fails the later ones with 401, as it would
fail later requests. An operation's own ``Authorization`` or ``Cookie`` header is refused (422):
it cannot name another caller. The bulk request, a write, passed the CSRF check of a session write
once; its operations need none. Everything runs in one thread (one database connection), so one
transaction really holds every query of every operation.

What is done outside the database waits for the commit (announcements of changed topics, rights
and tokens; outbox relays are woken on commit), so a rolled-back bulk tells no socket anything.
The topic ping, which probes sockets at once, is refused in a POST bulk (422; PUT runs it).

A bulk costs no more than its requests would on their own: what references add to an operation is
counted as it is rendered (app/api/references.py ``Budget``), and an operation whose body would pass
``DATA_UPLOAD_MAX_MEMORY_SIZE`` or whose path, query and headers would pass ``MAX_REQUEST_HEAD_BYTES``
is refused (422) before it is built in full. The results a bulk keeps (and answers) are at most
``BULK_MAX_RESULT_BYTES``: the operation whose answer passes it is the last run, its answer left out
and not parsed.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Literal
from urllib.parse import quote_plus

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from ninja import Body, Field, Router, Schema
from ninja.errors import HttpError
from pydantic import StrictInt, StrictStr, field_validator

from app.api.auth import caller_now, request_user
from app.api.examples import responses
from app.api.references import LET_NAME, BadReference, Budget, Results, render, render_text
from app.api.subrequests import API_ROOT, Refused, build, dispatch
from app.auth.services import principal_of
from app.server.access_log import log_bulk_operation

logger = logging.getLogger(__name__)

router = Router(tags=["bulk"])

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
UNSAFE_SEGMENT = re.compile(r"^\.{1,2}$|[/?#]")


class OperationIn(Schema):
    method: Method = Field(description="GET, POST, PUT, PATCH or DELETE, in any case ('post' as vstutils writes it)")
    # Strict: a JSON true is no segment (lax pydantic would make it 1).
    path: str | list[StrictStr | StrictInt] = Field(
        description="relative to /api/v1/: 'topics/sensors-7' or ['topics', 'sensors-7'] (segments joined with '/')"
    )
    data: Any = Field(None, description="the JSON body; omitted or null: none")
    query: str = Field("", description="the query string, without '?': 'prefix=sensors&limit=20'")
    headers: dict[str, str] = Field(default_factory=dict, description="more headers (not Authorization or Cookie)")
    let: str | None = Field(None, pattern=f"^{LET_NAME.pattern}$",
                            description="a name later operations use in <<name[data][field]>>")

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class OperationOut(Schema):
    method: str
    path: str = Field(description="the path run, with its query string")
    status: int
    data: Any = Field(description="the answer's JSON body (null for none)")
    info: str | None = Field(None, description="why the bulk refused the operation before any view saw it, "
                                               "or left its answer out (BULK_MAX_RESULT_BYTES)")


EXAMPLE_IN = [
    {"method": "POST", "path": "topics", "data": {"name": "sensors-7"}, "let": "topic"},
    {"method": "POST", "path": "tokens", "data": {"comment": "gateway for <<topic[data][name]>>"}},
    {"method": "GET", "path": ["topics", "<<topic[data][name]>>"]},
    {"method": "GET", "path": "topics", "query": "prefix=<<0[data][name]>>&limit=5"},
]
EXAMPLE_OUT = [
    {"method": "POST", "path": "/api/v1/topics", "status": 201, "data": {"name": "sensors-7", "public": False},
     "info": None},
    {"method": "POST", "path": "/api/v1/tokens", "status": 201, "data": {"id": 12, "comment": "gateway for sensors-7"},
     "info": None},
]
FAILED_OUT = [
    EXAMPLE_OUT[0],
    {"method": "GET", "path": "/api/v1/topics/missing", "status": 404,
     "data": {"detail": "topic missing does not exist"}, "info": None},
]
RESULTS_DOCS = responses(
    200, EXAMPLE_OUT, 400, 401, 403, 422, request=EXAMPLE_IN, others={502: FAILED_OUT},
    descriptions={502: "an operation failed (or the results passed BULK_MAX_RESULT_BYTES): everything was rolled "
                       "back; the results up to that one"},
)
IN_ORDER_DOCS = responses(200, [*EXAMPLE_OUT, FAILED_OUT[1]], 400, 401, 403, 422, request=EXAMPLE_IN)


def _segments(path: str | list[StrictStr | StrictInt], budget: Budget) -> list[str]:
    joined = path if isinstance(path, str) else "/".join(str(part).strip("/") for part in path)
    segments = []
    for part in joined.split("/"):
        if not part:
            continue
        segment = render_text(part, budget)
        if UNSAFE_SEGMENT.search(segment):
            raise Refused(422, f"path: segment {segment!r} must not be '.' or '..' nor hold '/', '?' or '#'")
        segments.append(segment)
    return segments


def _refused(method: str, path: str, status: int, reason: str) -> OperationOut:
    return OperationOut(method=method, path=path, status=status, data={"detail": reason}, info=reason)


def _operation(outer: HttpRequest, operation: OperationIn, results: Results, transactional: bool,
               room: int) -> tuple[OperationOut, int]:
    """Run one operation, and give it an access line of its own, as a direct request has."""
    started = time.monotonic()
    result, size, caller = _answer(outer, operation, results, transactional, room)
    log_bulk_operation(getattr(outer, "scope", {}), result.method, result.path, result.status,
                       "-" if caller is None else principal_of(caller), time.monotonic() - started)
    return result, size


def _answer(outer: HttpRequest, operation: OperationIn, results: Results, transactional: bool,
            room: int) -> tuple[OperationOut, int, Any]:
    """The operation's result, its size in bytes (its answer's body, path and reason; an answer
    over ``room`` bytes is not parsed), and whom it ran as (None: credentials that no longer
    authenticate)."""
    method = operation.method
    shown = str(operation.path)
    # Until the credentials are looked up again, the bulk's caller.
    caller = request_user(outer)
    head = Budget(results, "path, query and headers", settings.MAX_REQUEST_HEAD_BYTES, "MAX_REQUEST_HEAD_BYTES",
                  in_json=False)
    body = Budget(results, "data", settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "DATA_UPLOAD_MAX_MEMORY_SIZE", in_json=True)
    try:
        caller = caller_now(outer)
        path = API_ROOT + "/".join(_segments(operation.path, head))
        shown = path
        query = render_text(operation.query, head, quote_plus)
        shown = f"{path}?{query}" if query else path
        data = render(operation.data, body)
        headers = {name: render_text(value, head) for name, value in operation.headers.items()}
        answer = dispatch(build(outer, method, path, query, data, headers, caller), transactional, room - len(shown))
    except BadReference as error:
        result = _refused(method, shown, 422, str(error))
    except Refused as refused:
        result = _refused(method, shown, refused.status, refused.reason)
    except Exception:
        # As Django's handler would for the request on its own: an error log, a 500.
        logger.exception("bulk operation %s %s failed", method, shown)
        result = _refused(method, shown, 500, "internal error")
    else:
        return (OperationOut(method=method, path=shown, status=answer.status, data=answer.data, info=None),
                len(shown) + answer.size, caller)
    return result, len(shown) + 2 * len(result.info or ""), caller


class _Failed(Exception):
    """Unwinds the bulk's transaction."""


def _run_in_order(outer: HttpRequest, operations: list[OperationIn], transactional: bool,
                  done: list[OperationOut]) -> bool:
    """Run ``operations`` one after another, each result appended to ``done``; False if they stopped
    early: at a failed operation in a transaction, or at the one whose answer passed BULK_MAX_RESULT_BYTES."""
    results = Results()
    limit: int = settings.BULK_MAX_RESULT_BYTES
    kept = 0
    for operation in operations:
        result, size = _operation(outer, operation, results, transactional, limit - kept)
        kept += size
        if kept > limit:
            done.append(OperationOut(
                method=result.method, path=result.path, status=result.status, data=None,
                info=f"the bulk's results would pass BULK_MAX_RESULT_BYTES ({limit} bytes) with this answer "
                     f"({size} bytes): it is left out and no later operation was run",
            ))
            return False
        done.append(result)
        # The result itself, not a copy (model_dump would copy its data).
        results.add(dict(result), operation.let)
        if transactional and not 100 <= result.status < 400:
            return False
    return True


def _run(outer: HttpRequest, operations: list[OperationIn], transactional: bool) -> tuple[int, list[OperationOut]]:
    done: list[OperationOut] = []
    if not transactional:
        _run_in_order(outer, operations, transactional, done)
        return 200, done
    try:
        with transaction.atomic():
            if not _run_in_order(outer, operations, transactional, done):
                raise _Failed
    except _Failed:
        return 502, done
    return 200, done


async def _bulk(request: HttpRequest, operations: list[OperationIn],
                transactional: bool) -> tuple[int, list[OperationOut]]:
    limit: int = settings.BULK_MAX_OPERATIONS
    if len(operations) > limit:
        raise HttpError(
            422, f"a bulk holds at most {limit} operations (BULK_MAX_OPERATIONS); this one {len(operations)}"
        )
    names = [operation.let for operation in operations if operation.let is not None]
    if len(set(names)) != len(names):
        raise HttpError(422, "let: each name may be given once")
    # One thread for the whole bulk: every operation's queries use its connection (app/api/subrequests.py).
    answer: tuple[int, list[OperationOut]] = await sync_to_async(_run)(request, operations, transactional)
    return answer


@router.post("/_bulk/", url_name="bulk", response={200: list[OperationOut], 502: list[OperationOut], **RESULTS_DOCS[0]},
             openapi_extra=RESULTS_DOCS[1], summary="Run API operations in one transaction: all or none")
async def bulk_transactional(request: HttpRequest,
                             operations: Body[list[OperationIn]]) -> tuple[int, list[OperationOut]]:
    # Its 502 is the client's failure, told in the body: Django logs it as a WARNING, not an ERROR
    # (app/server/request_log.py).
    return await _bulk(request, operations, transactional=True)


@router.put("/_bulk/", url_name="bulk", response={200: list[OperationOut], **IN_ORDER_DOCS[0]},
            openapi_extra=IN_ORDER_DOCS[1],
            summary="Run API operations in order, each on its own (every status in the answer)")
async def bulk_in_order(request: HttpRequest, operations: Body[list[OperationIn]]) -> tuple[int, list[OperationOut]]:
    return await _bulk(request, operations, transactional=False)
