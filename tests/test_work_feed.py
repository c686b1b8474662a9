"""``/ws/work-requests/`` on real servers: live changes, the replay from ``completed_since`` joined to
them without a gap or a repeat, who sees what, bad parameters, and a change made through a second
server process (PostgreSQL + Redis) reaching a watcher on the first."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from app.work.models import Result
from app.work.transitions import abort, complete
from tests.browser import Browser
from tests.cluster import Cluster, start_cluster
from tests.protocol import auth, connect, key_with, recv_json, unique
from tests.servers import ServerProcess
from tests.services import require_postgres, require_redis
from tests.work import completed, in_thread, pending, running, worker

Frame = dict[str, Any]
RACING = 60


async def watch(server: ServerProcess, key: str | None, query: str = "") -> ClientConnection:
    return await connect(f"{server.ws}work-requests/{query}", auth(key) if key else None)


async def until_synced(ws: ClientConnection) -> tuple[list[Frame], Frame]:
    """The frames before ``synced``, and ``synced``."""
    frames = []
    while (frame := await recv_json(ws))["type"] != "synced":
        frames.append(frame)
    return frames, frame


async def collect(ws: ClientConnection, done: Callable[[list[Frame]], bool]) -> list[Frame]:
    """Frames until ``done(frames so far)``."""
    frames: list[Frame] = []
    while not done(frames):
        frames.append(await recv_json(ws))
    return frames


def ended(frames: list[Frame], ids: set[int]) -> list[int]:
    return [f["id"] for f in frames if f["id"] in ids and f["status"] in ("completed", "aborted")]


async def refusal(server: ServerProcess, key: str | None, query: str = "") -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        await watch(server, key, query)
    return refused.value


async def test_live_changes_arrive(server: ServerProcess) -> None:
    """A change committed after ``synced`` arrives as it happens: pending, running, completed, in order."""
    user, key = key_with()
    ws = await watch(server, key)
    assert (await until_synced(ws)) == ([], {"type": "synced", "replayed": 0})
    request = completed(created_by=user)
    frames = await collect(ws, lambda got: bool(got) and got[-1]["status"] == "completed")
    assert [(f["id"], f["status"], f["reason"], f["replayed"]) for f in frames] == [
        (request.pk, "pending", "created", False), (request.pk, "running", "assigned", False),
        (request.pk, "completed", "completed", False)]
    assert frames[-1]["result"] == "success" and frames[-1]["worker"] == request.worker.name


async def test_replay_then_live_without_gap_or_repeat(server: ServerProcess) -> None:
    """Requests that ended since ``completed_since`` are replayed oldest first; those ending while the
    watcher connects and after ``synced`` come live: each ended request exactly once."""
    user, key = key_with()
    since = timezone.now()
    on = worker(concurrency=100)
    before = [completed(created_by=user, on=on).pk for _ in range(3)]
    # Ending one by one while the watcher connects, joins the feed and reads its replay.
    racing = [running(created_by=user, on=on).pk for _ in range(RACING)]
    later = [running(created_by=user, on=on).pk for _ in range(3)]
    thread, outcome = in_thread(lambda: [complete(pk, Result.SUCCESS) for pk in racing])
    ws = await watch(server, key, "?completed_since=" + urllib.parse.quote(since.isoformat()))
    await asyncio.to_thread(thread.join, 30)
    assert "error" not in outcome
    frames, synced = await until_synced(ws)
    for pk in later:
        complete(pk, Result.SUCCESS)
    frames += await collect(ws, lambda got: set(later) <= set(ended(got, set(later))))
    everything = set(before) | set(racing) | set(later)
    seen = ended(frames, everything)
    assert sorted(seen) == sorted(everything)  # none missing, none twice
    replayed = [f for f in frames if f["replayed"]]
    assert set(before) <= {f["id"] for f in replayed} and synced["replayed"] == len(replayed)
    assert [f["completed_at"] for f in replayed] == sorted(f["completed_at"] for f in replayed)
    assert all(f["reason"] is None for f in replayed)


async def test_a_user_sees_only_their_own_requests(server: ServerProcess) -> None:
    """Without the view permission a watcher is shown the requests it created, no one else's."""
    user, key = key_with()
    other, mine = pending(created_by=key_with()[0]), pending(created_by=user)
    ws = await watch(server, key)
    await until_synced(ws)
    abort(other.pk)
    abort(mine.pk)
    assert [(f["id"], f["status"]) for f in await collect(ws, bool)] == [(mine.pk, "aborted")]


async def test_view_permission_sees_every_request(server: ServerProcess) -> None:
    """A watcher with work.view_workrequest is shown other users' requests too."""
    _, key = key_with("work.view_workrequest")
    ws = await watch(server, key, "?task_name=noop")
    await until_synced(ws)
    others = pending(created_by=key_with()[0])
    frames = await collect(ws, lambda got: bool(got) and got[-1]["id"] == others.pk)
    assert frames[-1]["status"] == "pending"


async def test_anonymous_watcher_refused_with_401(server: ServerProcess) -> None:
    """A handshake without credentials is answered 401 with the reason."""
    refused = await refusal(server, None)
    assert refused.response.status_code == 401 and b"token" in refused.response.body


async def test_bad_parameters_refused_with_400(server: ServerProcess) -> None:
    """A completed_since that is no time is answered 400 naming the parameter."""
    refused = await refusal(server, key_with()[1], "?completed_since=yesterday")
    assert refused.response.status_code == 400 and b"completed_since" in refused.response.body


# --- two server processes on PostgreSQL + Redis ------------------------------------------------

SETUP = """
import json
from django.contrib.auth import get_user_model
from app.auth.services import create_token
from app.work.submission import submit
user = get_user_model().objects.create_superuser({name!r}, password={password!r})
ids = [submit("noop", {{}}, created_by=user).pk for _ in range(3)]
print(json.dumps({{"key": create_token(user)[1], "ids": ids}}))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_postgres()
    redis_url = require_redis()
    # Polling this seldom, only the commit's notification can bring a change within the test's wait.
    cluster = start_cluster(tmp_path_factory.mktemp("feed"), redis_url, WORK_FEED_POLL_INTERVAL_S="60")
    yield cluster
    cluster.stop()


@pytest.mark.pinned_backend
async def test_change_through_another_server_reaches_the_watcher(cluster: Cluster) -> None:
    """Requests aborted in the admin of server B reach a watcher on server A at once."""
    a, b = cluster.servers
    name, password = unique("admin"), unique("password")
    made = json.loads(cluster.manage("shell", "-c", SETUP.format(name=name, password=password)).splitlines()[-1])
    ws = await watch(a, made["key"])
    await until_synced(ws)
    browser = Browser(b.http)
    assert browser.admin_login(name, password).status == 302
    form = {"action": "abort_requests", "_selected_action": made["ids"], "index": 0,
            "csrfmiddlewaretoken": browser.cookie("csrftoken") or ""}
    answer = await asyncio.to_thread(
        browser.request, "/admin/work/workrequest/", "POST", urllib.parse.urlencode(form, doseq=True).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 302
    frames = await collect(ws, lambda got: len(got) == len(made["ids"]))
    assert sorted((f["id"], f["status"], f["reason"]) for f in frames) == [
        (pk, "aborted", "aborted") for pk in sorted(made["ids"])]
