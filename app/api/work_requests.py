"""Work requests over HTTP: create one or many (all or none), list, get, abort, retry.

Who may do what is app/work/access.py: creating needs ``work.add_workrequest``; a caller sees,
aborts and retries the requests it created, and with ``work.view_workrequest`` /
``work.change_workrequest`` everyone's. A request the caller may not see answers 404 exactly like a
missing one, and is refused as a dependency (422) exactly like a missing one.

Creating validates the task data against the task's JSON schema (app/work/tasks.py): a refusal is
a 422 whose reason starts with the path that failed (``task_data.items[1]: 'two' is not of type
'integer'``). Each request counts against its creator's WORK_REQUESTS_PER_PRINCIPAL (403 past it).
The bulk create runs in one transaction: the first refused item refuses the whole list (its index
leads the reason: ``[3] task_data.text: ...``) and nothing is created.

Abort and retry are the guarded transitions (app/work/transitions.py); a request they no longer
apply to is a 409. Aborting a running request tells its worker (the transition does).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from ninja import Body, Field, Query, Router, Schema
from ninja import Status as HttpStatus
from ninja.errors import HttpError

from app.api.auth import AUTHENTICATION_REQUIRED, request_user, require_permission
from app.api.examples import responses
from app.api.instants import UtcDatetime
from app.api.pagination import PageOut, PageParams, keyset_page
from app.work import transitions
from app.work.access import ADD_REQUEST, CHANGE_REQUEST, may_abort, may_retry, visible_requests
from app.work.deadlocks import retrying_deadlocks
from app.work.models import PRIORITY_LIMIT, WorkRequest
from app.work.quotas import QuotaExceeded
from app.work.reports import state_of
from app.work.submission import PriorityNotAllowed, submit
from app.work.tasks import UnknownTask

router = Router(tags=["work requests"])

# Effective priorities (base + an admin's adjustment) are summed in SQL as 32-bit integers on
# PostgreSQL: bases this size leave room for any adjustment an admin would make.
# The model's choices as names: its enums would be schema components named Status and Result, which
# the outbox's Status already is in the document (tests/test_work_api_requests.py checks they agree).
StatusName = Literal["pending", "running", "completed", "aborted"]
ResultName = Literal["success", "failure", "error"]
# A primary key the database can compare (bigint).
RequestId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class WorkRequestIn(Schema):
    task_name: str = Field(min_length=1, max_length=100, description="a registered task (built in: noop, sleep)")
    task_data: dict[str, Any] = Field(
        default_factory=dict,
        description="validated against the task's JSON schema; `requires`: what a worker's metadata must hold",
    )
    priority_base: int = Field(0, ge=-PRIORITY_LIMIT, le=PRIORITY_LIMIT,
                               description="higher runs first; above 0 needs work.manage_workrequest_priorities")
    dependencies: list[RequestId] = Field(
        default_factory=list,
        description="ids of requests that must complete with success first (at most WORK_REQUEST_DEPENDENCIES_MAX)",
    )


class WorkRequestSummary(Schema):
    id: int
    task_name: str
    status: StatusName
    result: ResultName | None = Field(description="set once completed")
    priority_base: int
    priority_adjustment: int = Field(description="an admin's")
    priority: int = Field(description="effective: base + adjustment")
    attempts: int = Field(description="times it was started")
    worker: str | None = Field(description="the worker's name, once assigned")
    created_by: str | None = Field(description="the creator's username")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    supersedes: int | None = Field(description="the request this one retries")
    cascaded_from: int | None = Field(description="the dependency whose failure or abort ended this one")


class WorkRequestOut(WorkRequestSummary):
    task_data: dict[str, Any]
    dependencies: list[int]
    output_data: Any = Field(None, description="what its worker reported on completion")
    superseded_by: int | None = Field(description="the request that retries this one")


class WorkRequestPage(PageOut):
    items: list[WorkRequestSummary]


class WorkRequestFilter(PageParams):
    status: StatusName | None = None
    result: ResultName | None = None
    task_name: str | None = None
    worker: str | None = Field(None, description="a worker's name")
    created_by: str | None = Field(None, description="a username (without work.view_workrequest: your own only)")
    created_since: UtcDatetime | None = Field(None, description="created at or after (no offset: UTC)")
    created_until: UtcDatetime | None = Field(None, description="created before (no offset: UTC)")


def summary_fields(row: WorkRequest) -> dict[str, Any]:
    return {
        "id": row.pk, "task_name": row.task_name, "status": row.status, "result": row.result or None,
        "priority_base": row.priority_base, "priority_adjustment": row.priority_adjustment,
        "priority": row.priority, "attempts": row.attempts,
        "worker": row.worker.name if row.worker is not None else None,
        "created_by": row.created_by.get_username() if row.created_by is not None else None,
        "created_at": row.created_at, "started_at": row.started_at, "completed_at": row.completed_at,
        "supersedes": row.supersedes_id, "cascaded_from": row.cascaded_from_id,
    }


def request_out(row: WorkRequest) -> WorkRequestOut:
    dependencies = list(row.dependencies.order_by("pk").values_list("pk", flat=True))
    superseded_by = WorkRequest.objects.filter(supersedes=row.pk).values_list("pk", flat=True).first()
    return WorkRequestOut(**summary_fields(row), task_data=row.task_data, dependencies=dependencies,
                          output_data=row.output_data, superseded_by=superseded_by)


def _caller(user: Any) -> Any:
    if not user.is_authenticated:
        raise HttpError(401, AUTHENTICATION_REQUIRED)
    return user


def _visible(user: Any, pk: int) -> WorkRequest:
    row = visible_requests(_caller(user)).select_related("worker", "created_by").filter(pk=pk).first()
    if row is None:
        raise HttpError(404, f"work request {pk} does not exist")
    return row


def _submit(user: Any, body: WorkRequestIn, where: str = "") -> WorkRequest:
    """Create one request for ``user``; ``where`` leads every reason (a bulk item's index)."""
    try:
        return submit(body.task_name, body.task_data, created_by=user, priority_base=body.priority_base,
                      dependencies=body.dependencies, among=visible_requests(user))
    except (QuotaExceeded, PriorityNotAllowed) as exc:
        raise HttpError(403, f"{where}{exc}") from None
    except UnknownTask as exc:
        raise HttpError(422, f"{where}task_name: {exc}") from None
    except ValueError as exc:  # invalid task data (its path first), dependencies unknown or too many
        raise HttpError(422, f"{where}{exc}") from None


def _create(user: Any, body: WorkRequestIn) -> WorkRequestOut:
    require_permission(user, ADD_REQUEST)
    return request_out(_submit(user, body))


def _create_many(user: Any, bodies: list[WorkRequestIn]) -> list[WorkRequestOut]:
    require_permission(user, ADD_REQUEST)
    limit: int = settings.WORK_REQUESTS_BULK_MAX
    if not 1 <= len(bodies) <= limit:
        raise HttpError(422, f"a bulk create holds 1 to {limit} requests (WORK_REQUESTS_BULK_MAX); this one "
                             f"{len(bodies)}")

    def create_all() -> list[WorkRequest]:
        # All or none: an HttpError from any item unwinds the transaction, the earlier items with it.
        with transaction.atomic():
            return [_submit(user, body, f"[{index}] ") for index, body in enumerate(bodies)]

    # Each item's own retry cannot run inside this transaction; the whole list can run again.
    return [request_out(row) for row in retrying_deadlocks(create_all)]


def _list(request: HttpRequest, user: Any, filters: WorkRequestFilter) -> WorkRequestPage:
    rows = visible_requests(_caller(user)).select_related("worker", "created_by")
    for name, lookup in (("status", "status"), ("result", "result"), ("task_name", "task_name"),
                         ("worker", "worker__name"), ("created_by", "created_by__username"),
                         ("created_since", "created_at__gte"), ("created_until", "created_at__lt")):
        value = getattr(filters, name)
        if value is not None:
            rows = rows.filter(**{lookup: value})
    page = keyset_page(request, rows, "pk", filters)
    return WorkRequestPage(items=[WorkRequestSummary(**summary_fields(row)) for row in page.rows],
                           next_cursor=page.next_cursor, next=page.next)


def _get(user: Any, pk: int) -> WorkRequestOut:
    return request_out(_visible(user, pk))


def _abort(user: Any, pk: int) -> WorkRequestOut:
    row = _visible(user, pk)
    if not may_abort(user, row):
        raise HttpError(403, f"only its creator, or a holder of {CHANGE_REQUEST}, may abort work request {pk}")
    if not transitions.abort(pk):
        raise HttpError(409, f"work request {pk} is {state_of(_visible(user, pk))}; "
                             "only pending or running requests can be aborted")
    return request_out(_visible(user, pk))


def _retry(user: Any, pk: int) -> WorkRequestOut:
    row = _visible(user, pk)
    if not may_retry(user, row):
        raise HttpError(403, f"only its creator (with {ADD_REQUEST}), or a holder of {CHANGE_REQUEST}, "
                             f"may retry work request {pk}")
    try:
        new = transitions.retry(pk)
    except QuotaExceeded as exc:
        raise HttpError(403, str(exc)) from None
    except ValueError as exc:  # its task is gone, or its data no longer valid
        raise HttpError(422, str(exc)) from None
    if new is None:
        row = _visible(user, pk)
        if not transitions.retryable(row.status, row.result):
            raise HttpError(409, f"work request {pk} is {state_of(row)}; only failed or aborted requests "
                                 "can be retried")
        successor = WorkRequest.objects.filter(supersedes=pk).values_list("pk", flat=True).first()
        raise HttpError(409, f"work request {pk} was retried already (as #{successor})")
    return request_out(WorkRequest.objects.select_related("worker", "created_by").get(pk=new.pk))


SUMMARY_EXAMPLE: dict[str, Any] = {
    "id": 7, "task_name": "shop.invoice", "status": "completed", "result": "success", "priority_base": 0,
    "priority_adjustment": 0, "priority": 0, "attempts": 1, "worker": "builder-1", "created_by": "alice",
    "created_at": "2025-05-01T12:00:00Z", "started_at": "2025-05-01T12:00:01Z",
    "completed_at": "2025-05-01T12:00:09Z", "supersedes": None, "cascaded_from": None,
}
REQUEST_EXAMPLE: dict[str, Any] = {
    **SUMMARY_EXAMPLE, "task_data": {"order": 42, "requires": {"arch": "amd64"}}, "dependencies": [5],
    "output_data": {"pdf": "invoices/42.pdf"}, "superseded_by": None,
}
PENDING_EXAMPLE: dict[str, Any] = {
    **REQUEST_EXAMPLE, "status": "pending", "result": None, "attempts": 0, "worker": None, "started_at": None,
    "completed_at": None, "output_data": None,
}
CREATE_EXAMPLE = {"task_name": "shop.invoice", "task_data": {"order": 42, "requires": {"arch": "amd64"}},
                  "priority_base": 0, "dependencies": [5]}
NEXT_CURSOR = "WyIvYXBpL3YxL3dvcmstcmVxdWVzdHMiLDdd"
NEEDS = {401: AUTHENTICATION_REQUIRED, 404: "work request 7 does not exist"}
CREATE_REFUSALS = {
    **NEEDS, 403: f"needs the {ADD_REQUEST} permission",
    422: "task_data.order: 'forty-two' is not of type 'integer'",
}
CREATE_DOCS = responses(201, PENDING_EXAMPLE, 400, 401, 403, 422, details=CREATE_REFUSALS, request=CREATE_EXAMPLE)
CREATE_MANY_DOCS = responses(
    201, [PENDING_EXAMPLE, {**PENDING_EXAMPLE, "id": 8, "task_data": {"order": 43}, "dependencies": []}],
    400, 401, 403, 422, request=[CREATE_EXAMPLE, {"task_name": "shop.invoice", "task_data": {"order": 43}}],
    details={**CREATE_REFUSALS, 422: "[1] task_data.order: 'forty-three' is not of type 'integer'"},
)
LIST_DOCS = responses(200, {"items": [SUMMARY_EXAMPLE], "next_cursor": NEXT_CURSOR,
                            "next": f"/api/v1/work-requests?limit=1&cursor={NEXT_CURSOR}"},
                      401, 422, details=NEEDS)
GET_DOCS = responses(200, REQUEST_EXAMPLE, 401, 404, 422, details=NEEDS)
ABORT_DOCS = responses(
    200, {**PENDING_EXAMPLE, "status": "aborted", "completed_at": "2025-05-01T12:00:05Z"}, 401, 403, 404, 409, 422,
    details={**NEEDS, 403: f"only its creator, or a holder of {CHANGE_REQUEST}, may abort work request 7",
             409: "work request 7 is completed (success); only pending or running requests can be aborted"},
)
RETRY_DOCS = responses(
    201, {**PENDING_EXAMPLE, "id": 9, "supersedes": 7}, 401, 403, 404, 409, 422,
    details={**NEEDS, 403: f"only its creator (with {ADD_REQUEST}), or a holder of {CHANGE_REQUEST}, may retry "
                           "work request 7",
             409: "work request 7 was retried already (as #9)",
             422: "task_data.order: 'forty-two' is not of type 'integer'"},
)


@router.post("/work-requests", response={201: WorkRequestOut, **CREATE_DOCS[0]}, openapi_extra=CREATE_DOCS[1],
             summary="Create a work request")
async def create_work_request(request: HttpRequest, body: WorkRequestIn) -> HttpStatus[WorkRequestOut]:
    created: WorkRequestOut = await sync_to_async(_create)(request_user(request), body)
    return HttpStatus(201, created)


@router.post("/work-requests/bulk", response={201: list[WorkRequestOut], **CREATE_MANY_DOCS[0]},
             openapi_extra=CREATE_MANY_DOCS[1],
             summary="Create several work requests in one transaction: all or none (at most WORK_REQUESTS_BULK_MAX)")
async def create_work_requests(request: HttpRequest,
                               bodies: Body[list[WorkRequestIn]]) -> HttpStatus[list[WorkRequestOut]]:
    created: list[WorkRequestOut] = await sync_to_async(_create_many)(request_user(request), bodies)
    return HttpStatus(201, created)


@router.get("/work-requests", response={200: WorkRequestPage, **LIST_DOCS[0]}, openapi_extra=LIST_DOCS[1],
            summary="List the work requests you may see (oldest first, cursor-paginated)")
async def list_work_requests(request: HttpRequest, filters: Query[WorkRequestFilter]) -> WorkRequestPage:
    page: WorkRequestPage = await sync_to_async(_list)(request, request_user(request), filters)
    return page


@router.get("/work-requests/{pk}", response={200: WorkRequestOut, **GET_DOCS[0]}, openapi_extra=GET_DOCS[1],
            summary="One work request, with its data, dependencies and output")
async def get_work_request(request: HttpRequest, pk: int) -> WorkRequestOut:
    found: WorkRequestOut = await sync_to_async(_get)(request_user(request), pk)
    return found


@router.post("/work-requests/{pk}/abort", response={200: WorkRequestOut, **ABORT_DOCS[0]},
             openapi_extra=ABORT_DOCS[1], summary="Abort a pending or running work request (its worker is told)")
async def abort_work_request(request: HttpRequest, pk: int) -> WorkRequestOut:
    aborted: WorkRequestOut = await sync_to_async(_abort)(request_user(request), pk)
    return aborted


@router.post("/work-requests/{pk}/retry", response={201: WorkRequestOut, **RETRY_DOCS[0]},
             openapi_extra=RETRY_DOCS[1],
             summary="Retry a failed or aborted work request: a new request supersedes it (once)")
async def retry_work_request(request: HttpRequest, pk: int) -> HttpStatus[WorkRequestOut]:
    retried: WorkRequestOut = await sync_to_async(_retry)(request_user(request), pk)
    return HttpStatus(201, retried)
