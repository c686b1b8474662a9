"""The worker socket with real worker processes (tests/work_worker.py) against a real server, whose
periodic worker check is off: work reaches workers only by push (a request made runnable in the
server, a worker that connected or finished)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.work.models import Result, Status, WorkRequest
from app.work.transitions import abort
from app.work.workers import register_worker, set_enabled
from tests.browser import Browser
from tests.protocol import auth, connect, make_user, recv_json, send_json, set_password, unique
from tests.servers import ServerProcess, start_server
from tests.work import pending, reload, running
from tests.worker_processes import WorkerProcess, counts, fleet_cleared, until

LOST_AFTER_S = "10"
ADMIN_REQUESTS = "/admin/work/workrequest/"


@pytest.fixture(scope="module")
def push_server() -> Iterator[ServerProcess]:
    proc = start_server(os.environ["DATABASE_URL"], WORKER_CHECK_INTERVAL_S="0", WORKER_LOST_AFTER_S=LOST_AFTER_S)
    yield proc
    proc.stop()


__all__ = ["fleet_cleared"]  # a fixture, used by name
pytestmark = pytest.mark.usefixtures("fleet_cleared")


def start_worker(server: ServerProcess, metadata: dict[str, Any] | None = None, **options: Any) -> WorkerProcess:
    key = register_worker(unique("w"))[1]
    return WorkerProcess(server, key, metadata, **options)


def finished(*requests: WorkRequest) -> bool:
    return all(reload(request).status in (Status.COMPLETED, Status.ABORTED) for request in requests)


async def test_hundred_requests_over_three_workers_run_once(push_server: ServerProcess) -> None:
    """100 requests released at once to 3 idle workers each start and complete exactly once."""
    gate = pending(task_data={"requires": {"role": "gate"}})
    requests = [pending(task_data={"requires": {"pool": "main"}}, dependencies=[gate.pk]) for _ in range(100)]
    workers = [await start_worker(push_server, {"pool": "main"}).connected() for _ in range(3)]
    await start_worker(push_server, {"role": "gate"}).connected()
    ids = {request.pk for request in requests}
    done = WorkRequest.objects.filter(pk__in=ids, status=Status.COMPLETED)
    await until(lambda: done.count() == 100, "100 completions", timeout=60)
    assert counts(workers, "started") == dict.fromkeys(ids, 1)
    assert counts(workers, "completed") == dict.fromkeys(ids, 1)
    assert all(worker.ids("started") for worker in workers), [len(w.ids("started")) for w in workers]
    rows = WorkRequest.objects.filter(pk__in=ids)
    assert {(row.status, row.result, row.attempts) for row in rows} == {(Status.COMPLETED, Result.SUCCESS, 1)}


async def test_killed_worker_request_runs_elsewhere(push_server: ServerProcess) -> None:
    """A worker killed (SIGKILL) mid-request has that request re-run by another worker."""
    request = pending(task_name="sleep", task_data={"duration_s": 60, "requires": {"pool": "kill"}})
    first = await start_worker(push_server, {"pool": "kill"}).connected()
    await first.wait_for(lambda w: request.pk in w.ids("started"), "the first run")
    second = await start_worker(push_server, {"pool": "kill"}, max_sleep_s=0).connected()
    first.kill()
    await until(lambda: finished(request), "the re-run")
    assert [event["attempts"] for event in second.of("started")] == [2]
    row = reload(request)
    assert (row.status, row.result, row.attempts) == (Status.COMPLETED, Result.SUCCESS, 2)


async def test_dependency_holds_request_until_parent_succeeds(push_server: ServerProcess) -> None:
    """With two idle workers, a request starts only after its parent completed with success."""
    parent = pending(task_name="sleep", task_data={"duration_s": 0.5})
    child = pending(dependencies=[parent.pk])
    workers = [start_worker(push_server) for _ in range(2)]
    await until(lambda: finished(child), "the child to run")
    parent, child = reload(parent), reload(child)
    assert parent.result == child.result == Result.SUCCESS
    assert parent.completed_at is not None and child.started_at is not None
    assert child.started_at >= parent.completed_at
    assert counts(workers, "started") == {parent.pk: 1, child.pk: 1}


async def test_failed_parent_fails_dependent_without_running_it(push_server: ServerProcess) -> None:
    """A request whose parent completed with failure is completed as failure and never sent to a worker."""
    parent = pending(task_data={"result": "failure"})
    child = pending(dependencies=[parent.pk])
    worker = await start_worker(push_server).connected()
    await until(lambda: finished(child), "the child to end")
    child = reload(child)
    assert (child.status, child.result, child.cascaded_from_id) == (Status.COMPLETED, Result.FAILURE, parent.pk)
    assert worker.ids("started") == [parent.pk]


async def test_work_goes_only_to_capable_workers(push_server: ServerProcess) -> None:
    """Each request runs on the worker whose reported metadata meets its requirements, none on the other."""
    gpu = pending(task_data={"requires": {"gpu": True}})
    arm = pending(task_data={"requires": {"arch": "arm64", "tools": ["docker"]}})
    plain = start_worker(push_server, {"gpu": False, "arch": "amd64", "tools": ["docker"]})
    gpu_worker = start_worker(push_server, {"gpu": True, "arch": "amd64"})
    arm_worker = start_worker(push_server, {"arch": "arm64", "tools": ["docker", "git"]})
    await until(lambda: finished(gpu, arm), "both requests to run")
    assert (gpu_worker.ids("started"), arm_worker.ids("started"), plain.ids("started")) == ([gpu.pk], [arm.pk], [])


async def test_priorities_order_the_queue(push_server: ServerProcess) -> None:
    """One worker runs waiting requests by effective priority, then age."""
    low, high, middle, middle_later = (pending(priority_base=p) for p in (0, 10, 5, 5))
    worker = start_worker(push_server)
    await until(lambda: finished(low), "the last request")
    assert worker.ids("started") == [high.pk, middle.pk, middle_later.pk, low.pk]


async def test_request_created_while_worker_idle_is_pushed(push_server: ServerProcess) -> None:
    """A request made runnable in the server (its parent completed) reaches an idle worker at once."""
    parent = pending(task_data={"requires": {"pool": "parent"}})
    child = pending(dependencies=[parent.pk], task_data={"requires": {"pool": "child"}})
    waiting = await start_worker(push_server, {"pool": "child"}).connected()
    start_worker(push_server, {"pool": "parent"})
    await waiting.wait_for(lambda w: child.pk in w.ids("completed"), "the child on the idle worker")


async def test_disabled_token_refused_at_handshake(push_server: ServerProcess) -> None:
    """A worker whose token is disabled is told TOKEN_DISABLED and closed with 4401."""
    registered, key = register_worker(unique("w"))
    set_enabled(registered, False)
    worker = WorkerProcess(push_server, key)
    await worker.wait_for(lambda w: bool(w.of("closed")), "the refusal")
    assert [e["reason_code"] for e in worker.of("rejected")] == ["TOKEN_DISABLED"]
    assert [e["code"] for e in worker.of("closed")] == [4401]
    assert not worker.of("connected")


async def test_unknown_token_refused_at_handshake(push_server: ServerProcess) -> None:
    """A key no worker has (a user's token, or made up) is told TOKEN_UNKNOWN and closed with 4401."""
    worker = WorkerProcess(push_server, "not-a-worker-key")
    await worker.wait_for(lambda w: bool(w.of("closed")), "the refusal")
    assert [e["reason_code"] for e in worker.of("rejected")] == ["TOKEN_UNKNOWN"]
    assert [e["code"] for e in worker.of("closed")] == [4401]


async def test_disabling_token_closes_open_socket(push_server: ServerProcess) -> None:
    """Disabling a connected worker's token closes its socket (TOKEN_DISABLED, 4401) and returns its request."""
    registered, key = register_worker(unique("w"))
    request = pending(task_name="sleep", task_data={"duration_s": 60})
    worker = WorkerProcess(push_server, key)
    await worker.wait_for(lambda w: request.pk in w.ids("started"), "the request to start")
    set_enabled(registered, False)
    await worker.wait_for(lambda w: bool(w.of("closed")), "the socket to close")
    assert [e["reason_code"] for e in worker.of("rejected")] == ["TOKEN_DISABLED"]
    assert [e["code"] for e in worker.of("closed")] == [4401]
    await until(lambda: reload(request).status == Status.PENDING, "the request to go back to pending")


async def open_worker_socket(server: ServerProcess, key: str) -> ClientConnection:
    """A worker socket opened by hand, past ``connected`` and ``request_dynamic_metadata``."""
    ws = await connect(f"{server.ws}workers/", auth(key))
    assert [(await recv_json(ws))["type"] for _ in range(2)] == ["connected", "request_dynamic_metadata"]
    return ws


BAD_FRAMES: dict[str, Any] = {
    "malformed JSON": lambda other: '{"type": "heartbeat"',
    "not an object": lambda other: "[1, 2]",
    "unknown type": lambda other: json.dumps({"type": "dance"}),
    "wrong field type": lambda other: json.dumps({"type": "started", "work_request_id": "one"}),
    "completed for another's request": lambda other: json.dumps(
        {"type": "completed", "work_request_id": other.pk, "result": "success"}
    ),
    "oversized": lambda other: json.dumps({"type": "heartbeat", "pad": "x" * (1024 * 1024 + 1)}),
    # Over WORKER_METADATA_MAX_BYTES (64 KiB), under the task data limit: refused as metadata.
    "metadata over its limit": lambda other: json.dumps({"type": "metadata", "metadata": {"blob": "x" * 70_000}}),
    "metadata with NUL": lambda other: json.dumps({"type": "metadata", "metadata": {"name": "a\u0000b"}}),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_bad_frame_gets_error_and_worker_stays(push_server: ServerProcess, case: str) -> None:
    """A bad frame is answered with an error frame; the worker stays connected and still gets work."""
    others = running()
    ws = await open_worker_socket(push_server, register_worker(unique("w"))[1])
    await ws.send(BAD_FRAMES[case](others))
    error = await recv_json(ws)
    assert error["type"] == "error" and error["error"], error
    assert reload(others).status == Status.RUNNING
    request = pending()
    await send_json(ws, {"type": "metadata", "metadata": {}})
    offered = await recv_json(ws)
    assert (offered["type"], offered["work_request"]["id"]) == ("work_request_available", request.pk)


async def test_oversized_output_is_refused_and_request_keeps_running(push_server: ServerProcess) -> None:
    """Output data over WORK_REQUEST_DATA_MAX_BYTES gets an error frame; the request stays running for a retry."""
    request = pending()
    ws = await open_worker_socket(push_server, register_worker(unique("w"))[1])
    await send_json(ws, {"type": "metadata", "metadata": {}})
    assert (await recv_json(ws))["work_request"]["id"] == request.pk
    big = {"type": "completed", "work_request_id": request.pk, "result": "success", "output_data": "x" * 300_000}
    await send_json(ws, big)
    error = await recv_json(ws)
    assert (error["type"], error["work_request_id"]) == ("error", request.pk)
    assert "WORK_REQUEST_DATA_MAX_BYTES" in error["error"]
    assert reload(request).status == Status.RUNNING
    await send_json(ws, {**big, "output_data": {"small": True}})
    await until(lambda: reload(request).status == Status.COMPLETED, "the completion")


async def test_missing_token_refused(push_server: ServerProcess) -> None:
    """A worker socket opened without a token is told TOKEN_MISSING and closed with 4401."""
    ws = await connect(f"{push_server.ws}workers/")
    frame = await recv_json(ws)
    assert (frame["type"], frame["reason_code"]) == ("connection_rejected", "TOKEN_MISSING")
    with pytest.raises(websockets.ConnectionClosed):
        await recv_json(ws)
    assert ws.close_code == 4401


async def test_abort_reaches_the_running_worker(push_server: ServerProcess) -> None:
    """Aborting a running request in the admin sends its worker an ``aborted`` frame."""
    request = pending(task_name="sleep", task_data={"duration_s": 60})
    worker = start_worker(push_server)
    await worker.wait_for(lambda w: request.pk in w.ids("started"), "the request to start")
    user = make_user(is_staff=True, is_superuser=True)
    browser = Browser(push_server.http)
    assert browser.admin_login(user.username, set_password(user)).status == 302
    answer = browser.post_form(ADMIN_REQUESTS, {"action": "abort_requests", "_selected_action": str(request.pk)})
    assert answer.status == 302
    await worker.wait_for(lambda w: request.pk in w.ids("aborted"), "the aborted frame")
    assert reload(request).status == Status.ABORTED


async def test_second_connection_replaces_the_first(push_server: ServerProcess) -> None:
    """A worker connecting again closes its older connection (4409); the new one gets the work."""
    key = register_worker(unique("w"))[1]
    request = pending(task_data={"requires": {"connection": "second"}})
    first = await WorkerProcess(push_server, key).connected()
    second = WorkerProcess(push_server, key, {"connection": "second"})
    await first.wait_for(lambda w: bool(w.of("closed")), "the first connection to close")
    assert [e["code"] for e in first.of("closed")] == [4409]
    await second.wait_for(lambda w: request.pk in w.ids("completed"), "the work on the new connection")


async def test_completing_a_request_aborted_meanwhile_is_refused(push_server: ServerProcess) -> None:
    """A worker completing a request aborted where nobody could tell it gets an error saying so; nothing is recorded."""
    request = pending()
    ws = await open_worker_socket(push_server, register_worker(unique("w"))[1])
    await send_json(ws, {"type": "metadata", "metadata": {}})
    assert (await recv_json(ws))["work_request"]["id"] == request.pk
    assert abort(request.pk)  # in this process: no server hears of it
    await send_json(ws, {"type": "completed", "work_request_id": request.pk, "result": "success"})
    error = await recv_json(ws)
    assert (error["type"], error["work_request_id"]) == ("error", request.pk) and "aborted" in error["error"]
    assert (reload(request).status, reload(request).result) == (Status.ABORTED, "")


async def test_completion_naming_another_run_keeps_the_request(push_server: ServerProcess) -> None:
    """A completed naming a wrong attempt is refused and the connection still completes its own run afterwards."""
    request = pending()
    ws = await open_worker_socket(push_server, register_worker(unique("w"))[1])
    await send_json(ws, {"type": "metadata", "metadata": {}})
    assert (await recv_json(ws))["work_request"]["id"] == request.pk
    await send_json(ws, {"type": "completed", "work_request_id": request.pk, "result": "success", "attempt": 7})
    error = await recv_json(ws)
    assert (error["type"], error["work_request_id"]) == ("error", request.pk) and "run 7" in error["error"]
    assert reload(request).status == Status.RUNNING
    await send_json(ws, {"type": "completed", "work_request_id": request.pk, "result": "success"})
    await until(lambda: reload(request).status == Status.COMPLETED, "the completion of its own run")
