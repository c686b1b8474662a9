"""The worker check (relays/workers.py) with real worker processes: silent workers are lost and their
requests run elsewhere, heartbeats keep a busy worker, work made runnable outside any server reaches
idle workers, and what no notice told a connection (an abort, its session ending elsewhere) is made
good by reconciling with the database."""

from __future__ import annotations

import pytest
from django.utils import timezone

from app.work.models import Result, Status, Worker
from app.work.transitions import abort
from app.work.workers import register_worker
from tests.protocol import unique
from tests.servers import ServerProcess
from tests.work import pending, reload
from tests.worker_processes import LOST_AFTER_S, WorkerProcess, checking_server, fleet_cleared, until

__all__ = ["checking_server", "fleet_cleared"]  # fixtures, used by name
pytestmark = pytest.mark.usefixtures("fleet_cleared")


async def test_silent_worker_is_lost_and_its_request_runs_elsewhere(checking_server: ServerProcess) -> None:
    """A worker that hangs mid-request (no frame for WORKER_LOST_AFTER_S) is disconnected; another re-runs it."""
    registered, key = register_worker(unique("w"))
    request = pending(task_name="sleep", task_data={"duration_s": 60})
    hung = WorkerProcess(checking_server, key)
    await hung.wait_for(lambda w: request.pk in w.ids("started"), "the first run")
    hung.hang()
    other = WorkerProcess(checking_server, register_worker(unique("w"))[1], max_sleep_s=0)
    await other.wait_for(lambda w: request.pk in w.ids("completed"), "the re-run", timeout=LOST_AFTER_S + 15)
    assert [event["attempts"] for event in other.of("started")] == [2]
    assert Worker.objects.get(pk=registered.pk).connected_at is None


async def test_heartbeats_keep_a_busy_worker(checking_server: ServerProcess) -> None:
    """A worker running a request longer than WORKER_LOST_AFTER_S, heartbeating, completes it on its first run."""
    request = pending(task_name="sleep", task_data={"duration_s": LOST_AFTER_S * 1.5})
    worker = WorkerProcess(checking_server, register_worker(unique("w"))[1])
    await worker.wait_for(lambda w: request.pk in w.ids("completed"), "the completion")
    await until(lambda: reload(request).status == Status.COMPLETED, "the completion recorded")
    assert (reload(request).result, reload(request).attempts) == (Result.SUCCESS, 1)
    assert not worker.of("closed")


async def test_work_submitted_outside_the_server_reaches_idle_worker(checking_server: ServerProcess) -> None:
    """A request submitted by another process (a shell, a command) reaches an idle worker by the periodic check."""
    worker = await WorkerProcess(checking_server, register_worker(unique("w"))[1]).connected()
    request = pending()
    await worker.wait_for(lambda w: request.pk in w.ids("completed"), "the request")


async def test_abort_nobody_was_told_of_reaches_the_worker(checking_server: ServerProcess) -> None:
    """A request aborted where no server hears (a shell) is still stopped on its worker, which takes the next."""
    request = pending(task_name="sleep", task_data={"duration_s": 60})
    worker = WorkerProcess(checking_server, register_worker(unique("w"))[1])
    await worker.wait_for(lambda w: request.pk in w.ids("started"), "the request to start")
    assert abort(request.pk)
    await worker.wait_for(lambda w: request.pk in w.ids("aborted"), "the abort to reach the worker")
    following = pending()
    await worker.wait_for(lambda w: following.pk in w.ids("completed"), "the next request")


async def test_connection_whose_session_ended_elsewhere_is_closed(checking_server: ServerProcess) -> None:
    """A connection the database says is no longer the worker's session is closed, and given nothing meanwhile."""
    registered, key = register_worker(unique("w"))
    worker = await WorkerProcess(checking_server, key).connected()
    # As another server would write it when the worker connected there (its notice lost on the way).
    Worker.objects.filter(pk=registered.pk).update(connected_at=timezone.now())
    request = pending()
    await worker.wait_for(lambda w: bool(w.of("closed")), "the stale connection to close")
    assert worker.of("closed")[0]["code"] == 4409
    assert not worker.of("started")
    assert reload(request).status == Status.PENDING
