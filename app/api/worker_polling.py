"""The worker endpoints: what a worker that cannot hold the ``/ws/workers/`` socket does over HTTP,
authenticated by its own token (app/api/worker_auth.py), the same steps as the socket's frames.

    POST /api/v1/worker/work-requests/next            -> 200 a request now running on it, or 204
    POST /api/v1/worker/work-requests/<id>/started    -> 200 (it began)
    POST /api/v1/worker/work-requests/<id>/progress   -> 200 (still at it)
    POST /api/v1/worker/work-requests/<id>/completed  -> 200 {"result", "output_data"}
    PUT  /api/v1/worker/metadata                      -> 200 its dynamic metadata, replaced
    GET  /api/v1/worker                               -> 200 itself, with what it runs

``next`` assigns through the queue (app/work/queue.py ``next_request_for``): the request the
scheduler picks for this worker's metadata and free slots; when there is none, a request given to it
earlier that it never reported ``started`` (``redelivered``: that answer may have been lost), or
204. Report ``started`` as soon as a request is taken. A worker reports only
on its own running requests (app/work/reports.py): another's, a missing one, or one returned to
pending after it was taken for lost is a 404; one of its own that ended meanwhile (aborted, above
all) is a 409, which tells a polling worker to stop working on it (as is any call while the worker
holds a socket session: one way at a time). Every call keeps the worker
present; one running a request calls at least every WORKER_LOST_AFTER_S (``progress`` serves),
or it is taken for lost and the request goes back to pending.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils import timezone
from ninja import Body, Field, Query, Router, Schema
from ninja import Status as HttpStatus
from ninja.errors import HttpError

from app.api.examples import responses
from app.api.work_requests import ResultName, StatusName
from app.api.worker_auth import SOCKET_HELD, WORKER_TOKEN_REQUIRED, WorkerKey, request_worker
from app.api.workers import WORKER_EXAMPLE, WorkerOut, with_running, worker_out
from app.work import reports
from app.work.models import Worker, WorkRequest
from app.work.queue import next_request_for
from app.work.tasks import InvalidTaskData, check_size
from app.work.workers import InvalidMetadata, report_metadata

router = Router(tags=["worker"], auth=WorkerKey())


class AssignmentOut(Schema):
    id: int
    task_name: str
    task_data: dict[str, Any] = Field(description="valid for the task's JSON schema")
    status: StatusName
    result: ResultName | None
    priority: int
    attempts: int = Field(description="this run is the attempts-th")
    created_at: datetime
    started_at: datetime | None
    redelivered: bool = Field(
        False, description="given to this worker before and never reported started: the answer that gave it may "
                           "have been lost; a worker that has it already goes on with it",
    )


# ``?attempt=``: the run a report is about (the assignment's ``attempts``): a report of an earlier run of
# a request given to this worker again is then a 409 and acknowledges nothing.
RunParam = Annotated[int | None, Query(None, ge=1, description="the run reported on: the assignment's attempts")]


class ProgressIn(Schema):
    fraction: float | None = Field(None, ge=0, le=1, description="how far it is, 0 to 1, if it knows")
    message: str = Field("", max_length=1000)


class CompletedIn(Schema):
    result: ResultName = Field(description="success; failure: the task ran and failed; error: it could not run")
    output_data: Any = Field(None, description="any JSON, at most WORK_REQUEST_DATA_MAX_BYTES encoded")
    attempt: int | None = Field(
        None, ge=1, description="the assignment's attempts: a late report of an earlier run of the request (given "
                                "back to pending and to this worker again meanwhile) then completes nothing (409)",
    )


def assignment_out(row: WorkRequest, redelivered: bool = False) -> AssignmentOut:
    return AssignmentOut.model_validate({
        "id": row.pk, "task_name": row.task_name, "task_data": row.task_data, "status": row.status,
        "result": row.result or None, "priority": row.priority, "attempts": row.attempts,
        "created_at": row.created_at, "started_at": row.started_at, "redelivered": redelivered,
    })


def _storable(value: Any, where: str) -> None:
    try:
        check_size(where, value)
    except InvalidTaskData as exc:
        raise HttpError(422, str(exc)) from None


Reported = TypeVar("Reported")


def _reported(report: Callable[[], Reported]) -> Reported:
    """Make a report on one request; its refusals as answers: not this worker's 404, ended 409."""
    try:
        return report()
    except reports.NotAssigned as exc:
        raise HttpError(404, str(exc)) from None
    except reports.NotRunning as exc:
        raise HttpError(409, str(exc)) from None


def _acknowledged(worker: Worker, pk: int, attempt: int | None) -> WorkRequest:
    return _reported(lambda: reports.acknowledge(worker.pk, pk, attempt))


def _me(worker: Worker) -> WorkerOut:
    return worker_out(with_running(Worker.objects.all()).get(pk=worker.pk), timezone.now())


def _next(worker: Worker) -> AssignmentOut | None:
    given = next_request_for(worker.pk, session=reports.HTTP_SESSION)
    if given is not None:
        return assignment_out(given)
    again = reports.unanswered(worker.pk)
    return assignment_out(again, redelivered=True) if again is not None else None


def _completed(worker: Worker, pk: int, body: CompletedIn) -> AssignmentOut:
    if body.output_data is not None:
        _storable(body.output_data, "output_data")
    request = _reported(
        lambda: reports.complete_own(worker.pk, pk, body.result, body.output_data, attempt=body.attempt)
    )
    if request is None:  # recorded, then deleted (by an admin) before it could be read back
        raise HttpError(404, f"work request {pk} was deleted once its completion was recorded")
    return assignment_out(request)


def _metadata(worker: Worker, metadata: dict[str, Any]) -> WorkerOut:
    try:
        report_metadata(worker.pk, metadata)
    except InvalidMetadata as exc:
        raise HttpError(422, str(exc)) from None
    return _me(worker)


ASSIGNMENT_EXAMPLE: dict[str, Any] = {
    "id": 7, "task_name": "shop.invoice", "task_data": {"order": 42, "requires": {"arch": "amd64"}},
    "status": "running", "result": None, "priority": 0, "attempts": 1, "created_at": "2025-05-01T12:00:00Z",
    "started_at": "2025-05-01T12:00:01Z", "redelivered": False,
}
NEEDS = {401: WORKER_TOKEN_REQUIRED, 404: "work request 7 is not assigned to this worker",
         409: "work request 7 is aborted: stop working on it"}
HELD = {**NEEDS, 409: SOCKET_HELD}
POLLING_EXAMPLE = {**WORKER_EXAMPLE, "connected_via": "http"}
ME_DOCS = responses(200, POLLING_EXAMPLE, 401, details=NEEDS)
METADATA_DOCS = responses(
    200, {**POLLING_EXAMPLE, "dynamic_metadata": {"tools": ["docker", "qemu"], "cpus": 8},
          "metadata": {"tools": ["docker", "qemu"], "cpus": 8, "arch": "amd64"}},
    400, 401, 409, 422, details={**HELD, 422: "metadata: strings may not contain the NUL (0x00) character"},
    request={"tools": ["docker", "qemu"], "cpus": 8},
)
NEXT_DESCRIPTIONS = {
    200: "a request, now running on this worker (redelivered: one given before and never reported started)",
    204: "nothing for it now",
}
NEXT_DOCS = responses(200, ASSIGNMENT_EXAMPLE, 401, 409, details=HELD, others={204: None},
                      descriptions=NEXT_DESCRIPTIONS)
STARTED_DOCS = responses(200, ASSIGNMENT_EXAMPLE, 401, 404, 409, 422, details=NEEDS)
PROGRESS_DOCS = responses(200, ASSIGNMENT_EXAMPLE, 400, 401, 404, 409, 422, details=NEEDS,
                          request={"fraction": 0.4, "message": "page 2 of 5"})
COMPLETED_DOCS = responses(
    200, {**ASSIGNMENT_EXAMPLE, "status": "completed", "result": "success"}, 400, 401, 404, 409, 422,
    details={**NEEDS, 422: "output_data is 300000 bytes encoded, more than WORK_REQUEST_DATA_MAX_BYTES=262144"},
    request={"result": "success", "output_data": {"pdf": "invoices/42.pdf"}, "attempt": 1},
)


@router.get("/worker", response={200: WorkerOut, **ME_DOCS[0]}, openapi_extra=ME_DOCS[1],
            summary="The calling worker, with the requests it runs")
async def worker_itself(request: HttpRequest) -> WorkerOut:
    found: WorkerOut = await sync_to_async(_me)(request_worker(request))
    return found


@router.put("/worker/metadata", response={200: WorkerOut, **METADATA_DOCS[0]}, openapi_extra=METADATA_DOCS[1],
            summary="Report the worker's own metadata (replaces its dynamic_metadata)")
async def report_worker_metadata(request: HttpRequest, metadata: Body[dict[str, Any]]) -> WorkerOut:
    found: WorkerOut = await sync_to_async(_metadata)(request_worker(request), metadata)
    return found


@router.post("/worker/work-requests/next", response={200: AssignmentOut, 204: None, **NEXT_DOCS[0]},
             openapi_extra=NEXT_DOCS[1], summary="Take the next work request for this worker (204: none)")
async def next_work_request(request: HttpRequest) -> HttpStatus[AssignmentOut | None]:
    given: AssignmentOut | None = await sync_to_async(_next)(request_worker(request))
    return HttpStatus(200, given) if given is not None else HttpStatus(204, None)


@router.post("/worker/work-requests/{pk}/started", response={200: AssignmentOut, **STARTED_DOCS[0]},
             openapi_extra=STARTED_DOCS[1], summary="Report that this worker began a request it was given")
async def report_started(request: HttpRequest, pk: int, attempt: RunParam = None) -> AssignmentOut:
    found: WorkRequest = await sync_to_async(_acknowledged)(request_worker(request), pk, attempt)
    return assignment_out(found)


@router.post("/worker/work-requests/{pk}/progress", response={200: AssignmentOut, **PROGRESS_DOCS[0]},
             openapi_extra=PROGRESS_DOCS[1],
             summary="Report progress on a running request (also what keeps a busy worker present)")
async def report_progress(request: HttpRequest, pk: int, body: ProgressIn, attempt: RunParam = None) -> AssignmentOut:
    # Not kept (no column holds it): the call is the worker's sign of life while it works, and its
    # answer whether to go on (a 409 once the request was aborted). The body is validated all the same.
    found: WorkRequest = await sync_to_async(_acknowledged)(request_worker(request), pk, attempt)
    return assignment_out(found)


@router.post("/worker/work-requests/{pk}/completed", response={200: AssignmentOut, **COMPLETED_DOCS[0]},
             openapi_extra=COMPLETED_DOCS[1], summary="Report a request's result and output")
async def report_completed(request: HttpRequest, pk: int, body: CompletedIn) -> AssignmentOut:
    done: AssignmentOut = await sync_to_async(_completed)(request_worker(request), pk, body)
    return done
