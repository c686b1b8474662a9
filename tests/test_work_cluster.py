"""Two server processes on PostgreSQL + Redis share one fleet of real worker processes: notices made
on one process (work runnable, a request aborted, a worker connecting again) reach the workers
connected to the other. The periodic worker check is off, so only the backplane can carry them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.browser import Browser
from tests.cluster import Cluster, start_cluster
from tests.protocol import STAFF_PASSWORD, unique
from tests.services import require_postgres, require_redis
from tests.worker_processes import WorkerProcess, stop_all

pytestmark = pytest.mark.pinned_backend


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_postgres()
    redis_url = require_redis()
    cluster = start_cluster(tmp_path_factory.mktemp("work-cluster"), redis_url, WORKER_CHECK_INTERVAL_S="0")
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def _fleet() -> Iterator[None]:
    yield
    stop_all()


def create_worker(cluster: Cluster) -> str:
    return cluster.manage("createworker", unique("w")).strip()


def python(cluster: Cluster, code: str) -> str:
    """Run ``code`` in ``manage.py shell`` on the cluster's database (no server: nobody is told)."""
    return cluster.manage("shell", "--no-imports", "-v", "0", "-c", code).strip()


def submit(cluster: Cluster, *requests: tuple[str, dict[str, object], list[int]]) -> list[int]:
    """Submit (task, task data, dependency indexes into ``requests``) in order; their ids."""
    code = (
        "from app.work.submission import submit\n"
        "ids = []\n"
        f"for task, data, parents in {json.dumps(requests)}:\n"
        "    ids.append(submit(task, data, dependencies=[ids[i] for i in parents]).pk)\n"
        "print(*ids)"
    )
    return [int(pk) for pk in python(cluster, code).split()]


async def test_work_made_runnable_on_one_process_reaches_worker_on_the_other(cluster: Cluster) -> None:
    """A request whose parent completed through server A is pushed to the idle worker connected to B."""
    a, b = cluster.servers
    parent, child = submit(cluster, ("noop", {"requires": {"side": "a"}}, []),
                           ("noop", {"requires": {"side": "b"}}, [0]))
    on_b = await WorkerProcess(b, create_worker(cluster), {"side": "b"}).connected()
    WorkerProcess(a, create_worker(cluster), {"side": "a"})
    await on_b.wait_for(lambda w: child in w.ids("completed"), "the child on B")
    assert on_b.ids("started") == [child]


async def test_abort_on_one_process_reaches_worker_on_the_other(cluster: Cluster) -> None:
    """Aborting in server A's admin sends ``aborted`` to the worker running the request through B."""
    a, b = cluster.servers
    [request] = submit(cluster, ("sleep", {"duration_s": 60}, []))
    worker = WorkerProcess(b, create_worker(cluster))
    await worker.wait_for(lambda w: request in w.ids("started"), "the request to start on B")
    admin = unique("admin")
    python(cluster, "from django.contrib.auth import get_user_model\n"
                    f"get_user_model().objects.create_superuser({admin!r}, password={STAFF_PASSWORD!r})")
    browser = Browser(a.http)
    assert browser.admin_login(admin, STAFF_PASSWORD).status == 302
    form = {"action": "abort_requests", "_selected_action": str(request)}
    assert browser.post_form("/admin/work/workrequest/", form).status == 302
    await worker.wait_for(lambda w: request in w.ids("aborted"), "the aborted frame on B")


async def test_connecting_again_on_one_process_closes_the_connection_on_the_other(cluster: Cluster) -> None:
    """A worker connecting through A closes its older connection through B (4409)."""
    a, b = cluster.servers
    key = create_worker(cluster)
    older = await WorkerProcess(b, key).connected()
    await WorkerProcess(a, key).connected()
    await older.wait_for(lambda w: bool(w.of("closed")), "the older connection to close")
    assert [event["code"] for event in older.of("closed")] == [4409]
