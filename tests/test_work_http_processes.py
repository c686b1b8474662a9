"""The work HTTP API with real worker processes against one real server whose worker check is on:
an abort through POST /api/v1/work-requests/<id>/abort reaches the worker running the request (a
socket worker by an ``aborted`` frame, a polling worker by a 409 on its next report), and polling
workers (tests/work_poller.py) run requests exactly once, a killed one's elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

from app.work.models import Result, Status, Worker, WorkRequest
from app.work.workers import register_worker
from tests.api_client import call
from tests.protocol import key_with, unique
from tests.servers import ServerProcess
from tests.worker_processes import LOST_AFTER_S, WorkerProcess, checking_server, counts, fleet_cleared, until

__all__ = ["checking_server", "fleet_cleared"]  # fixtures, used by name
pytestmark = pytest.mark.usefixtures("fleet_cleared")


@pytest.fixture
def submitter_key() -> str:
    """A token of a user who may create work requests (and so abort their own), nothing more."""
    return key_with("work.add_workrequest")[1]


def create(server: ServerProcess, key: str, task_name: str = "noop", **task_data: Any) -> int:
    status, body = call(server, "/work-requests", "POST", key, {"task_name": task_name, "task_data": task_data})
    assert status == 201, body
    return int(body["id"])


def row(request_id: int) -> tuple[str, str, int]:
    found = WorkRequest.objects.get(pk=request_id)
    return found.status, found.result, found.attempts


async def abort_over_http(server: ServerProcess, key: str, worker: WorkerProcess, request_id: int) -> None:
    """Abort ``request_id`` through the API once ``worker`` runs it; wait until the worker hears of it."""
    await worker.wait_for(lambda w: request_id in w.ids("started"), "the request to start")
    status, body = call(server, f"/work-requests/{request_id}/abort", "POST", key)
    assert (status, body["status"]) == (200, "aborted"), body
    await worker.wait_for(lambda w: request_id in w.ids("aborted"), "the worker to hear of the abort")


async def test_api_abort_reaches_socket_worker_which_takes_the_next(checking_server: ServerProcess,
                                                                    submitter_key: str) -> None:
    """An abort by the request's creator over HTTP reaches the socket worker running it; it stays and runs the next."""
    request = create(checking_server, submitter_key, "sleep", duration_s=60)
    worker = WorkerProcess(checking_server, register_worker(unique("w"))[1])
    await abort_over_http(checking_server, submitter_key, worker, request)
    following = create(checking_server, submitter_key)
    # The worker tells it completed once it sent the frame: the server records it a moment later.
    await until(lambda: row(following)[0] == Status.COMPLETED, "the next request to complete")
    assert (row(request), row(following)) == ((Status.ABORTED, "", 1), (Status.COMPLETED, Result.SUCCESS, 1))
    assert [event["event"] for event in worker.events] == ["connected", "started", "aborted", "started", "completed"]


async def test_api_abort_reaches_polling_worker_which_takes_the_next(checking_server: ServerProcess,
                                                                     submitter_key: str) -> None:
    """An abort over HTTP is a 409 on the polling worker's next progress report; it stops and runs the next."""
    request = create(checking_server, submitter_key, "sleep", duration_s=60)
    worker = WorkerProcess(checking_server, register_worker(unique("w"))[1], polling=True)
    await abort_over_http(checking_server, submitter_key, worker, request)
    following = create(checking_server, submitter_key)
    await worker.wait_for(lambda w: following in w.ids("completed"), "the next request")
    assert (row(request), row(following)) == ((Status.ABORTED, "", 1), (Status.COMPLETED, Result.SUCCESS, 1))
    assert [event["event"] for event in worker.events] == ["connected", "started", "aborted", "started", "completed"]


async def test_twenty_requests_over_two_polling_workers_run_once(checking_server: ServerProcess,
                                                                 submitter_key: str) -> None:
    """20 requests created at once, taken by two polling workers, each start and complete exactly once."""
    workers = [await WorkerProcess(checking_server, register_worker(unique("w"))[1], polling=True).connected()
               for _ in range(2)]
    bulk = [{"task_name": "sleep", "task_data": {"duration_s": 0.1}}] * 20
    status, created = call(checking_server, "/work-requests/bulk", "POST", submitter_key, bulk)
    assert status == 201, created
    ids = [request["id"] for request in created]
    await until(lambda: sum(len(worker.ids("completed")) for worker in workers) >= 20, "20 completions")
    assert counts(workers, "started") == dict.fromkeys(ids, 1)
    assert counts(workers, "completed") == dict.fromkeys(ids, 1)
    assert {row(pk) for pk in ids} == {(Status.COMPLETED, Result.SUCCESS, 1)}
    assert all(worker.ids("completed") for worker in workers), [len(worker.ids("completed")) for worker in workers]


async def test_killed_polling_worker_request_runs_elsewhere(checking_server: ServerProcess,
                                                            submitter_key: str) -> None:
    """A polling worker killed mid-request is lost after WORKER_LOST_AFTER_S; another polling worker re-runs it."""
    request = create(checking_server, submitter_key, "sleep", duration_s=60)
    killed, key = register_worker(unique("w"))
    first = WorkerProcess(checking_server, key, polling=True)
    await first.wait_for(lambda w: request in w.ids("started"), "the first run")
    second = await WorkerProcess(checking_server, register_worker(unique("w"))[1], polling=True,
                                 max_sleep_s=0).connected()
    first.kill()
    await second.wait_for(lambda w: request in w.ids("completed"), "the re-run", timeout=LOST_AFTER_S + 15)
    assert [event["attempts"] for event in second.of("started")] == [2]
    assert row(request) == (Status.COMPLETED, Result.SUCCESS, 2)
    assert Worker.objects.get(pk=killed.pk).connected_at is None
