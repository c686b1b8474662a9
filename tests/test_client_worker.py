"""The client SDK's ``Worker`` against a real server whose worker check is on (a silent worker is lost
after LOST_AFTER_S): requests submitted over the HTTP API run in the worker's handler, its outcome,
aborts, token rejections, heartbeats, and a server killed and restarted under it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.work.workers import register_worker, set_enabled
from switchyard_client import ConnectionRefused, Progress, Worker, WorkerRejected, WorkFailed, WorkRequest
from switchyard_client.link import Dialer
from tests.api_client import call
from tests.protocol import key_with, unique
from tests.servers import ServerProcess
from tests.work import clear_work
from tests.worker_processes import LOST_AFTER_S, checking_server, until

__all__ = ["checking_server"]  # a fixture, used by name

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 15.0
# Over the server's WORK_REQUEST_DATA_MAX_BYTES (256 KiB), under a frame's limit (1 MiB).
OVERSIZED = "x" * 300_000


@pytest.fixture
def work_server(checking_server: ServerProcess) -> ServerProcess:
    """The module's server, running (a test that failed mid-outage may have left it down), and no
    other test's requests in the queue."""
    if not checking_server.running:
        checking_server.restart()
    clear_work()
    return checking_server


@pytest.fixture
def submitter() -> str:
    """A token of a user who may create work requests (and so see and abort their own)."""
    return key_with("work.add_workrequest")[1]


class Handler:
    """Records what it runs. ``noop`` returns ``output`` (or raises when its data says failure, or
    ``WorkFailed`` for error); ``sleep`` reports progress, then waits for ``release`` or its ``duration_s``."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.cancelled: list[int] = []
        self.active = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.output: Any = None

    async def __call__(self, request: WorkRequest, progress: Progress) -> Any:
        self.started.append((request.id, request.attempts))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if request.task_name == "sleep":
                await progress(0.5, "waiting")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), request.task_data["duration_s"])
            elif request.task_data.get("result") == "failure":
                raise RuntimeError("told to fail")
            elif request.task_data.get("result") == "error":
                raise WorkFailed({"told": "error"}, result="error")
            return self.output if self.output is not None else {"ran": request.id, "attempt": request.attempts}
        except asyncio.CancelledError:
            self.cancelled.append(request.id)
            raise
        finally:
            self.active -= 1


@contextlib.asynccontextmanager
async def running(server: ServerProcess, key: str, pool: str, handler: Handler) -> AsyncIterator[Worker]:
    """A worker of metadata ``{"pool": pool}`` running ``handler`` in a task; closed after."""
    async with Worker(server.http, token=key, metadata={"pool": pool}, backoff_initial_s=0.05,
                      backoff_maximum_s=0.5) as worker:
        task = asyncio.create_task(worker.run(handler))
        try:
            yield worker
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def api(server: ServerProcess, path: str, method: str = "GET", key: str | None = None,
              body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(call, server, path, method, key, body)


async def submit(server: ServerProcess, key: str, pool: str, task_name: str = "noop", **task_data: Any) -> int:
    """A request only a worker of ``pool`` may run, created over the HTTP API."""
    status, body = await api(server, "/work-requests", "POST", key,
                             {"task_name": task_name, "task_data": {"requires": {"pool": pool}, **task_data}})
    assert status == 201, body
    return int(body["id"])


async def ended(server: ServerProcess, key: str, request_id: int) -> dict[str, Any]:
    """The request as the API shows it once it completed or was aborted."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        status, body = await api(server, f"/work-requests/{request_id}", key=key)
        assert status == 200, body
        if body["status"] in ("completed", "aborted"):
            return dict(body)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for request {request_id} to end: {body}")
        await asyncio.sleep(0.05)  # bounded-poll


def outcome(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["status"], row["result"], row["output_data"], row["attempts"]


async def test_a_submitted_request_completes_with_the_output(work_server: ServerProcess, submitter: str) -> None:
    """A request created over the API runs in the handler of the worker whose metadata it requires and
    completes with what the handler returned."""
    registered, key = register_worker(unique("w"))
    pool, handler = unique("pool"), Handler()
    async with running(work_server, key, pool, handler) as worker:
        request = await submit(work_server, submitter, pool)
        row = await ended(work_server, submitter, request)
        assert worker.name == registered.name
    assert outcome(row) == ("completed", "success", {"ran": request, "attempt": 1}, 1)
    assert (row["worker"], handler.started) == (registered.name, [(request, 1)])


async def test_a_raising_handler_fails_the_request_with_the_error(work_server: ServerProcess, submitter: str) -> None:
    """An exception in the handler completes the request as failure with the exception's text; the
    worker runs the next one."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    async with running(work_server, key, pool, handler):
        failing = await submit(work_server, submitter, pool, result="failure")
        row = await ended(work_server, submitter, failing)
        following = await ended(work_server, submitter, await submit(work_server, submitter, pool))
    assert outcome(row) == ("completed", "failure", {"error": "RuntimeError: told to fail"}, 1)
    assert following["result"] == "success"


async def test_work_failed_chooses_the_result_and_output(work_server: ServerProcess, submitter: str) -> None:
    """A handler raising WorkFailed completes the request with the result and output it names."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    async with running(work_server, key, pool, handler):
        row = await ended(work_server, submitter, await submit(work_server, submitter, pool, result="error"))
    assert outcome(row) == ("completed", "error", {"told": "error"}, 1)


async def test_an_output_that_is_no_json_completes_as_error(work_server: ServerProcess, submitter: str) -> None:
    """A handler's output that cannot be sent as JSON completes the request as error, saying so."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    handler.output = {"when": object()}
    async with running(work_server, key, pool, handler):
        row = await ended(work_server, submitter, await submit(work_server, submitter, pool))
    assert (row["result"], row["output_data"]["error"][:22]) == ("error", "the output is no JSON:")


async def test_new_metadata_brings_the_work_it_matches(work_server: ServerProcess, submitter: str) -> None:
    """A request no worker's metadata matched runs once the worker reports metadata that does."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    async with running(work_server, key, unique("other-pool"), handler) as worker:
        request = await submit(work_server, submitter, pool)
        await until(lambda: worker.connected, "the worker to be welcomed")
        assert (await api(work_server, f"/work-requests/{request}", key=submitter))[1]["status"] == "pending"
        await worker.set_metadata({"pool": pool})
        row = await ended(work_server, submitter, request)
    assert (row["result"], handler.started) == ("success", [(request, 1)])


async def test_progress_reports_are_taken_by_the_server(work_server: ServerProcess, submitter: str) -> None:
    """A handler's progress reports reach the server, which takes them: no error frame comes back
    before the worker's next request (the server answers frames in order)."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    async with running(work_server, key, pool, handler) as worker:
        request = await submit(work_server, submitter, pool, "sleep", duration_s=60)
        await until(lambda: bool(handler.started), "the request to start")
        handler.release.set()
        await ended(work_server, submitter, request)
        await ended(work_server, submitter, await submit(work_server, submitter, pool))
        assert list(worker.errors) == []


async def test_a_bad_progress_report_raises_value_error(work_server: ServerProcess, submitter: str) -> None:
    """A fraction outside 0 to 1 raises ValueError in the handler (so its request fails), never reaching the server."""
    key, pool = register_worker(unique("w"))[1], unique("pool")
    raised: list[str] = []

    async def handle(request: WorkRequest, progress: Progress) -> None:
        try:
            await progress(1.5)
        except ValueError as error:
            raised.append(str(error))
            raise

    async with Worker(work_server.http, token=key, metadata={"pool": pool}) as worker:
        task = asyncio.create_task(worker.run(handle))
        row = await ended(work_server, submitter, await submit(work_server, submitter, pool))
        task.cancel()
        assert list(worker.errors) == []
    assert raised == ["progress: fraction: Input should be less than or equal to 1"]
    assert (row["result"], row["output_data"]) == ("failure", {"error": f"ValueError: {raised[0]}"})


async def test_an_abort_cancels_the_handler(work_server: ServerProcess, submitter: str) -> None:
    """An abort over the API cancels the handler running the request; the worker runs the next one."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    async with running(work_server, key, pool, handler) as worker:
        request = await submit(work_server, submitter, pool, "sleep", duration_s=60)
        await until(lambda: bool(handler.started), "the request to start")
        status, body = await api(work_server, f"/work-requests/{request}/abort", "POST", submitter)
        assert (status, body["status"]) == (200, "aborted"), body
        await until(lambda: handler.cancelled == [request], "the handler to be cancelled")
        following = await ended(work_server, submitter, await submit(work_server, submitter, pool))
        assert worker.running == frozenset()
    assert following["result"] == "success"
    assert (await ended(work_server, submitter, request))["status"] == "aborted"


async def test_requests_run_at_once_up_to_the_concurrency(work_server: ServerProcess, submitter: str) -> None:
    """A worker registered with concurrency 2 runs two requests at once; the third waits for a free slot."""
    key, pool, handler = register_worker(unique("w"), concurrency=2)[1], unique("pool"), Handler()
    async with running(work_server, key, pool, handler):
        requests = [await submit(work_server, submitter, pool, "sleep", duration_s=60) for _ in range(3)]
        await until(lambda: len(handler.started) == 2, "two requests to start")
        third = await api(work_server, f"/work-requests/{requests[2]}", key=submitter)
        handler.release.set()
        rows = [await ended(work_server, submitter, request) for request in requests]
    assert third[1]["status"] == "pending"
    assert [row["result"] for row in rows] == ["success"] * 3
    assert handler.peak == 2


async def test_an_output_the_server_refuses_completes_as_error(work_server: ServerProcess, submitter: str) -> None:
    """Output over the server's limit is refused; the worker reports the request again as error, with the reason."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    handler.output = OVERSIZED
    async with running(work_server, key, pool, handler) as worker:
        row = await ended(work_server, submitter, await submit(work_server, submitter, pool))
        assert [error.work_request_id for error in worker.errors] == [row["id"]]
    assert (row["status"], row["result"]) == ("completed", "error")
    assert row["output_data"]["error"].startswith("the server refused the report: ")


async def test_an_unknown_token_is_refused_at_once(work_server: ServerProcess) -> None:
    """A key no worker has raises WorkerRejected (a ConnectionRefused) TOKEN_UNKNOWN, without retrying."""
    with pytest.raises(WorkerRejected) as raised:
        await asyncio.wait_for(Worker(work_server.http, token="not-a-worker-key").start(), 5)
    assert isinstance(raised.value, ConnectionRefused)
    assert (raised.value.reason_code, raised.value.status) == ("TOKEN_UNKNOWN", 4401)


async def test_a_disabled_worker_is_refused(work_server: ServerProcess) -> None:
    """A worker whose token is disabled raises WorkerRejected TOKEN_DISABLED on connecting."""
    registered, key = register_worker(unique("w"))
    set_enabled(registered, False)
    with pytest.raises(WorkerRejected) as raised:
        await asyncio.wait_for(Worker(work_server.http, token=key).start(), 5)
    assert raised.value.reason_code == "TOKEN_DISABLED"


async def test_disabling_a_running_worker_ends_run(work_server: ServerProcess, submitter: str) -> None:
    """Disabling a connected worker's token ends run() with WorkerRejected and cancels its handler."""
    registered, key = register_worker(unique("w"))
    pool, handler = unique("pool"), Handler()
    async with Worker(work_server.http, token=key, metadata={"pool": pool}) as worker:
        task = asyncio.create_task(worker.run(handler))
        request = await submit(work_server, submitter, pool, "sleep", duration_s=60)
        await until(lambda: bool(handler.started), "the request to start")
        set_enabled(registered, False)
        with pytest.raises(WorkerRejected) as raised:
            await asyncio.wait_for(task, TIMEOUT_S)
    assert raised.value.reason_code == "TOKEN_DISABLED"
    assert handler.cancelled == [request]


async def test_heartbeats_keep_a_silent_handler_connected(work_server: ServerProcess, submitter: str) -> None:
    """A handler silent for longer than the server's lost-after time keeps its request: the worker heartbeats."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    async with running(work_server, key, pool, handler):
        request = await submit(work_server, submitter, pool, "sleep", duration_s=LOST_AFTER_S * 1.5)
        row = await ended(work_server, submitter, request)
    assert (row["result"], row["attempts"], handler.started, handler.cancelled) == ("success", 1, [(request, 1)], [])


async def test_the_worker_keeps_working_across_a_server_restart(work_server: ServerProcess, submitter: str) -> None:
    """Killed (SIGKILL) and restarted under a running request, the server gets the worker back: the
    request's first run is cancelled, its second completes, and new requests run."""
    key, pool, handler = register_worker(unique("w"))[1], unique("pool"), Handler()
    async with running(work_server, key, pool, handler) as worker:
        request = await submit(work_server, submitter, pool, "sleep", duration_s=60)
        await until(lambda: bool(handler.started), "the first run")
        work_server.kill()
        await until(lambda: handler.cancelled == [request], "the first run to be cancelled")
        await asyncio.to_thread(work_server.restart)
        await until(lambda: (request, 2) in handler.started, "the second run", timeout=TIMEOUT_S)
        handler.release.set()
        row = await ended(work_server, submitter, request)
        following = await ended(work_server, submitter, await submit(work_server, submitter, pool))
        assert worker.connected
    assert (row["result"], row["attempts"], row["output_data"]) == ("success", 2, {"ran": request, "attempt": 2})
    assert handler.started == [(request, 1), (request, 2), (following["id"], 1)]


async def test_a_link_ended_by_its_first_frame_is_no_timeout(work_server: ServerProcess) -> None:
    """Link.start on a connection its owner ends on the first frame (gone, maybe, before start looked)
    returns or raises that refusal, never a TimeoutError saying no connection came."""
    async def opened() -> None:
        return None

    async def refuse(frame: Any) -> None:
        raise ConnectionRefused("test", 4401, str(frame))

    for _ in range(5):
        link = Dialer({"Authorization": "Token not-a-worker-key"}).link(
            f"{work_server.ws}workers/", on_open=opened, on_frame=refuse)
        with contextlib.suppress(ConnectionRefused):
            await asyncio.wait_for(link.start(TIMEOUT_S), TIMEOUT_S)
        await asyncio.wait_for(link.wait_ended(), TIMEOUT_S)
        assert isinstance(link.failure, ConnectionRefused)
        await link.close()
