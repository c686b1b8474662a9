"""Two server processes on PostgreSQL + Redis share one fleet of real worker processes: notices made
on one process (work runnable, a request aborted, a worker connecting again) reach the workers
connected to the other, and a hundred requests run once over the workers of both. The periodic
worker check is off, so only the backplane can carry them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api_client import call
from tests.browser import Browser
from tests.cluster import Cluster, pg_redis_cluster
from tests.protocol import STAFF_PASSWORD, unique
from tests.worker_processes import WorkerProcess, counts, until, workers_stopped

__all__ = ["workers_stopped"]  # a fixture, used by name
pytestmark = [pytest.mark.pinned_backend, pytest.mark.usefixtures("workers_stopped")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with pg_redis_cluster(tmp_path_factory.mktemp("work-cluster"), WORKER_CHECK_INTERVAL_S="0") as cluster:
        yield cluster


async def test_work_made_runnable_on_one_process_reaches_worker_on_the_other(cluster: Cluster) -> None:
    """A request whose parent completed through server A is pushed to the idle worker connected to B."""
    a, b = cluster.servers
    parent, child = cluster.submit(("noop", {"requires": {"side": "a"}}, []),
                                   ("noop", {"requires": {"side": "b"}}, [0]))
    key_b, key_a = cluster.manage_many(("createworker", unique("w")), ("createworker", unique("w")))
    on_b = await WorkerProcess(b, key_b, {"side": "b"}).connected()
    WorkerProcess(a, key_a, {"side": "a"})
    await on_b.wait_for(lambda w: child in w.ids("completed"), "the child on B")
    assert on_b.ids("started") == [child]


async def test_abort_on_one_process_reaches_worker_on_the_other(cluster: Cluster) -> None:
    """Aborting in server A's admin sends ``aborted`` to the worker running the request through B."""
    a, b = cluster.servers
    [request] = cluster.submit(("sleep", {"duration_s": 60}, []))
    worker = WorkerProcess(b, cluster.create_worker())
    await worker.wait_for(lambda w: request in w.ids("started"), "the request to start on B")
    admin = unique("admin")
    cluster.python("from django.contrib.auth import get_user_model\n"
                   f"get_user_model().objects.create_superuser({admin!r}, password={STAFF_PASSWORD!r})")
    browser = Browser(a.http)
    assert browser.admin_login(admin, STAFF_PASSWORD).status == 302
    form = {"action": "abort_requests", "_selected_action": str(request)}
    assert browser.post_form("/admin/work/workrequest/", form).status == 302
    await worker.wait_for(lambda w: request in w.ids("aborted"), "the aborted frame on B")


async def test_connecting_again_on_one_process_closes_the_connection_on_the_other(cluster: Cluster) -> None:
    """A worker connecting through A closes its older connection through B (4409)."""
    a, b = cluster.servers
    key = cluster.create_worker()
    older = await WorkerProcess(b, key).connected()
    await WorkerProcess(a, key).connected()
    await older.wait_for(lambda w: bool(w.of("closed")), "the older connection to close")
    assert [event["code"] for event in older.of("closed")] == [4409]


async def test_hundred_requests_over_workers_on_both_processes_run_once(cluster: Cluster) -> None:
    """100 requests created through A, taken by two workers on A and two on B, each start and complete once."""
    a, b = cluster.servers
    admin = unique("admin")
    key = cluster.token(admin, "--superuser")
    keys = [call(a, "/workers", "POST", key, {"name": unique("w")})[1]["key"] for _ in range(4)]
    on_a = [WorkerProcess(a, each, {"pool": "hundred"}) for each in keys[:2]]
    on_b = [WorkerProcess(b, each, {"pool": "hundred"}) for each in keys[2:]]
    workers = on_a + on_b
    for worker in workers:
        await worker.connected()
    bulk = [{"task_name": "noop", "task_data": {"requires": {"pool": "hundred"}}}] * 100
    status, created = call(a, "/work-requests/bulk", "POST", key, bulk)
    assert status == 201, created
    ids = [request["id"] for request in created]
    await until(lambda: sum(len(worker.ids("completed")) for worker in workers) >= 100, "100 completions",
                timeout=60)
    # A worker tells it completed once it sent the frame: its server records it a moment later.
    completed = f"/work-requests?created_by={admin}&status=completed&limit=200"
    await until(lambda: len(call(b, completed, key=key)[1]["items"]) == 100, "100 completions recorded")
    rows = call(b, completed, key=key)[1]["items"]
    assert {(row["id"], row["result"], row["attempts"]) for row in rows} == {(pk, "success", 1) for pk in ids}
    assert counts(workers, "started") == dict.fromkeys(ids, 1)
    assert counts(workers, "completed") == dict.fromkeys(ids, 1)
    assert counts(on_a, "started") and counts(on_b, "started")
