"""Workers over HTTP, for those who run the fleet: register one (its token's key is in that answer
only, as for tokens), list them with their connection and what they run, get one, disable or enable.

Registering needs ``work.add_worker`` (it mints a token), reading ``work.view_worker``, disabling and
enabling ``work.change_worker`` (app/work/access.py). Disabling saves the worker's token disabled,
which is announced like any token revocation: its open sockets close in every process, and its
HTTP calls are refused from then on (app/api/worker_auth.py). What it was running goes back to
pending by the lost-worker rules (app/work/workers.py), as for any worker that falls silent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja import Status as HttpStatus
from ninja.errors import HttpError

from app.api.auth import AUTHENTICATION_REQUIRED, request_user, require_permission
from app.api.examples import responses
from app.api.pagination import PageOut, PageParams, keyset_page
from app.work import workers
from app.work.access import ADD_WORKER, CHANGE_WORKER, VIEW_WORKER
from app.work.models import WORKER_NAME_MAX_CHARS, Status, Via, Worker, WorkRequest

router = Router(tags=["workers"])

Connection = Literal["connected", "lost", "disconnected"]
# Each worker row in a list carries what it runs: a concurrency this high is already a fleet of its own.
CONCURRENCY_MAX = 1000


class RunningOut(Schema):
    id: int
    task_name: str
    started_at: datetime | None


class WorkerOut(Schema):
    id: int
    name: str
    enabled: bool = Field(description="its token's: a disabled worker is refused everywhere")
    connection: Connection = Field(
        description="connected (a socket, or HTTP calls within WORKER_LOST_AFTER_S), lost (connected but silent "
                    "for WORKER_LOST_AFTER_S) or disconnected"
    )
    connected_via: Via | None = Field(
        description="while connected: over its socket (/ws/workers/) or by HTTP calls; one way at a time"
    )
    registered_at: datetime
    connected_at: datetime | None
    last_seen_at: datetime | None
    concurrency: int = Field(description="work requests it may run at once")
    static_metadata: dict[str, Any] = Field(description="set by admins; wins over the worker's own on a clash")
    dynamic_metadata: dict[str, Any] = Field(description="reported by the worker")
    metadata: dict[str, Any] = Field(description="what requirements are matched against: dynamic, then static")
    running: list[RunningOut] = Field(description="the requests it runs now")


class NewWorkerOut(WorkerOut):
    key: str = Field(description="its token's secret: shown in this answer only, stored as its sha256 hash")


class WorkerPage(PageOut):
    items: list[WorkerOut]


class WorkerFilter(PageParams):
    connection: Connection | None = None
    enabled: bool | None = None
    prefix: str | None = Field(None, description="names starting with this")


class WorkerIn(Schema):
    name: str = Field(min_length=1, max_length=WORKER_NAME_MAX_CHARS, description="unique, no surrounding spaces")
    concurrency: int = Field(1, ge=1, le=CONCURRENCY_MAX)
    static_metadata: dict[str, Any] = Field(default_factory=dict, description="capabilities only an admin sets")


def connection_of(worker: Worker, now: datetime) -> Connection:
    if worker.connected_at is None:
        return "disconnected"
    lost = workers.is_lost(worker.connected_at, worker.last_seen_at, now, settings.WORKER_LOST_AFTER_S)
    return "lost" if lost else "connected"


def with_running(rows: QuerySet[Worker]) -> QuerySet[Worker]:
    running = WorkRequest.objects.filter(status=Status.RUNNING).order_by("id")
    return rows.select_related("token").prefetch_related(Prefetch("assigned", queryset=running, to_attr="running"))


def worker_out(worker: Worker, now: datetime) -> WorkerOut:
    # Prefetched by ``with_running``; a worker read otherwise costs a query.
    running: list[WorkRequest] = (
        worker.running if hasattr(worker, "running")
        else list(worker.assigned.filter(status=Status.RUNNING).order_by("id"))
    )
    return WorkerOut(
        id=worker.pk, name=worker.name, enabled=worker.token.enabled, connection=connection_of(worker, now),
        connected_via=Via(worker.connected_via) if worker.connected_at is not None and worker.connected_via else None,
        registered_at=worker.registered_at, connected_at=worker.connected_at, last_seen_at=worker.last_seen_at,
        concurrency=worker.concurrency, static_metadata=worker.static(),
        dynamic_metadata=worker.dynamic(), metadata=worker.metadata(),
        running=[RunningOut(id=r.pk, task_name=r.task_name, started_at=r.started_at) for r in running],
    )


def _worker(pk: int) -> Worker:
    worker = with_running(Worker.objects.all()).filter(pk=pk).first()
    if worker is None:
        raise HttpError(404, f"worker {pk} does not exist")
    return worker


def _register(user: Any, body: WorkerIn) -> NewWorkerOut:
    require_permission(user, ADD_WORKER)
    try:
        worker, key = workers.register_worker(body.name, concurrency=body.concurrency,
                                              static_metadata=body.static_metadata)
    except workers.WorkerNameTaken:
        raise HttpError(409, f"worker {body.name} exists (or a user {workers.USERNAME_PREFIX}{body.name})") from None
    except ValueError as exc:  # the name's rules, metadata too large or unstorable (workers.check_metadata)
        raise HttpError(422, str(exc)) from None
    return NewWorkerOut(**worker_out(_worker(worker.pk), timezone.now()).model_dump(), key=key)


def _filtered(rows: QuerySet[Worker], filters: WorkerFilter, now: datetime) -> QuerySet[Worker]:
    if filters.prefix:
        rows = rows.filter(name__startswith=filters.prefix)
    if filters.enabled is not None:
        rows = rows.filter(token__enabled=filters.enabled)
    lost = workers.lost_workers(now).values("pk")
    if filters.connection == "connected":
        rows = rows.filter(connected_at__isnull=False).exclude(pk__in=lost)
    elif filters.connection == "lost":
        rows = rows.filter(pk__in=lost)
    elif filters.connection == "disconnected":
        rows = rows.filter(connected_at__isnull=True)
    return rows


def _list(request: HttpRequest, user: Any, filters: WorkerFilter) -> WorkerPage:
    require_permission(user, VIEW_WORKER)
    now = timezone.now()
    page = keyset_page(request, with_running(_filtered(Worker.objects.all(), filters, now)), "name", filters)
    return WorkerPage(items=[worker_out(w, now) for w in page.rows], next_cursor=page.next_cursor, next=page.next)


def _get(user: Any, pk: int) -> WorkerOut:
    require_permission(user, VIEW_WORKER)
    return worker_out(_worker(pk), timezone.now())


def _set_enabled(user: Any, pk: int, enabled: bool) -> WorkerOut:
    require_permission(user, CHANGE_WORKER)
    worker = _worker(pk)
    if worker.token.enabled != enabled:
        # Saved through the ORM: a disabled token's revocation is announced, its sockets close (4401).
        workers.set_enabled(worker, enabled)
    return worker_out(_worker(pk), timezone.now())


WORKER_EXAMPLE: dict[str, Any] = {
    "id": 3, "name": "builder-1", "enabled": True, "connection": "connected", "connected_via": "socket",
    "registered_at": "2025-05-01T08:00:00Z",
    "connected_at": "2025-05-01T11:58:00Z", "last_seen_at": "2025-05-01T12:00:00Z", "concurrency": 2,
    "static_metadata": {"arch": "amd64"}, "dynamic_metadata": {"tools": ["docker", "qemu"]},
    "metadata": {"tools": ["docker", "qemu"], "arch": "amd64"},
    "running": [{"id": 7, "task_name": "shop.invoice", "started_at": "2025-05-01T12:00:01Z"}],
}
NEW_WORKER_EXAMPLE: dict[str, Any] = {
    **WORKER_EXAMPLE, "connection": "disconnected", "connected_via": None, "connected_at": None, "last_seen_at": None,
    "dynamic_metadata": {}, "metadata": {"arch": "amd64"}, "running": [], "key": "Xk3v9QaB…(43 characters)",
}
NEXT_CURSOR = "WyIvYXBpL3YxL3dvcmtlcnMiLCJidWlsZGVyLTEiXQ"
NEEDS = {401: AUTHENTICATION_REQUIRED, 403: f"needs the {VIEW_WORKER} permission", 404: "worker 3 does not exist"}
REGISTER_DOCS = responses(
    201, NEW_WORKER_EXAMPLE, 400, 401, 403, 409, 422,
    request={"name": "builder-1", "concurrency": 2, "static_metadata": {"arch": "amd64"}},
    details={**NEEDS, 403: f"needs the {ADD_WORKER} permission",
             409: f"worker builder-1 exists (or a user {workers.USERNAME_PREFIX}builder-1)"},
)
LIST_DOCS = responses(200, {"items": [WORKER_EXAMPLE], "next_cursor": NEXT_CURSOR,
                            "next": f"/api/v1/workers?limit=1&cursor={NEXT_CURSOR}"}, 401, 403, 422, details=NEEDS)
GET_DOCS = responses(200, WORKER_EXAMPLE, 401, 403, 404, 422, details=NEEDS)
CHANGE_NEEDS = {**NEEDS, 403: f"needs the {CHANGE_WORKER} permission"}
DISABLE_DOCS = responses(200, {**WORKER_EXAMPLE, "enabled": False}, 401, 403, 404, 422, details=CHANGE_NEEDS)
ENABLE_DOCS = responses(200, WORKER_EXAMPLE, 401, 403, 404, 422, details=CHANGE_NEEDS)


@router.post("/workers", response={201: NewWorkerOut, **REGISTER_DOCS[0]}, openapi_extra=REGISTER_DOCS[1],
             summary="Register a worker (its token's key is in this answer only)")
async def register_worker(request: HttpRequest, body: WorkerIn) -> HttpStatus[NewWorkerOut]:
    worker: NewWorkerOut = await sync_to_async(_register)(request_user(request), body)
    return HttpStatus(201, worker)


@router.get("/workers", response={200: WorkerPage, **LIST_DOCS[0]}, openapi_extra=LIST_DOCS[1],
            summary="List workers (by name) with their connection and the requests they run")
async def list_workers(request: HttpRequest, filters: Query[WorkerFilter]) -> WorkerPage:
    page: WorkerPage = await sync_to_async(_list)(request, request_user(request), filters)
    return page


@router.get("/workers/{pk}", response={200: WorkerOut, **GET_DOCS[0]}, openapi_extra=GET_DOCS[1],
            summary="One worker")
async def get_worker(request: HttpRequest, pk: int) -> WorkerOut:
    worker: WorkerOut = await sync_to_async(_get)(request_user(request), pk)
    return worker


@router.post("/workers/{pk}/disable", response={200: WorkerOut, **DISABLE_DOCS[0]}, openapi_extra=DISABLE_DOCS[1],
             summary="Disable a worker: its token is refused everywhere, its sockets close (4401)")
async def disable_worker(request: HttpRequest, pk: int) -> WorkerOut:
    worker: WorkerOut = await sync_to_async(_set_enabled)(request_user(request), pk, False)
    return worker


@router.post("/workers/{pk}/enable", response={200: WorkerOut, **ENABLE_DOCS[0]}, openapi_extra=ENABLE_DOCS[1],
             summary="Enable a disabled worker again")
async def enable_worker(request: HttpRequest, pk: int) -> WorkerOut:
    worker: WorkerOut = await sync_to_async(_set_enabled)(request_user(request), pk, True)
    return worker
