"""A server process dies (SIGKILL) under a worker running a request: nothing of that server is left
to return the request, so the worker check of the surviving server finds the worker silent in the
database (app/work/sessions.py ``release_lost``) and the request runs on a worker connected there.
Two servers on PostgreSQL + Redis of their own: the killed one is not reused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api_client import call
from tests.cluster import Cluster, pg_redis_cluster
from tests.protocol import unique
from tests.worker_processes import WorkerProcess, until, workers_stopped

__all__ = ["workers_stopped"]  # a fixture, used by name
pytestmark = [pytest.mark.pinned_backend, pytest.mark.usefixtures("workers_stopped")]

LOST_AFTER_S = 2.0


@pytest.fixture(scope="module")
def checking_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with pg_redis_cluster(tmp_path_factory.mktemp("work-server-loss"), WORKER_CHECK_INTERVAL_S="0.2",
                          WORKER_LOST_AFTER_S=str(LOST_AFTER_S)) as cluster:
        yield cluster


async def test_request_of_a_killed_server_runs_on_a_worker_of_the_other(checking_cluster: Cluster) -> None:
    """A request running through a server killed by SIGKILL is released by the other's worker check and re-run there."""
    doomed, survivor = checking_cluster.servers
    admin = checking_cluster.token(unique("admin"), "--superuser")
    registered = [call(survivor, "/workers", "POST", admin, {"name": unique("w")})[1] for _ in range(2)]
    status, created = call(survivor, "/work-requests", "POST", admin,
                           {"task_name": "sleep", "task_data": {"duration_s": 60}})
    assert status == 201, created
    request = created["id"]
    stranded = WorkerProcess(doomed, registered[0]["key"])
    await stranded.wait_for(lambda w: request in w.ids("started"), "the first run, through the doomed server")
    rerun = await WorkerProcess(survivor, registered[1]["key"], max_sleep_s=0).connected()
    doomed.kill()
    await rerun.wait_for(lambda w: request in w.ids("completed"), "the re-run", timeout=LOST_AFTER_S + 15)
    # The worker tells it completed once it sent the frame: the server records it a moment later.
    await until(lambda: call(survivor, f"/work-requests/{request}", key=admin)[1]["status"] == "completed",
                "the re-run recorded")
    assert [event["attempts"] for event in rerun.of("started")] == [2]
    row = call(survivor, f"/work-requests/{request}", key=admin)[1]
    assert (row["status"], row["result"], row["attempts"], row["worker"]) == (
        "completed", "success", 2, registered[1]["name"])
    assert call(survivor, f"/workers/{registered[0]['id']}", key=admin)[1]["connection"] == "disconnected"
