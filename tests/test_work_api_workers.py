"""Workers over HTTP for those who run the fleet (in-process client, session database): register (the
key shown once), list with connection state and running requests, get, disable and enable."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from django.utils import timezone

from app.broker.models import Announcement
from app.work.models import Worker
from app.work.workers import mark_connected, register_worker
from tests.protocol import unique
from tests.work import running
from tests.work_api import call, caller, worker_key


def registrar() -> str:
    return caller("add_worker")[1]


def test_register_answers_the_key_once() -> None:
    """Registering answers 201 with a key that authenticates the new worker; reading it again shows no key."""
    name = unique("builder")
    status, body = call("/workers", "POST", registrar(), {"name": name, "concurrency": 2,
                                                           "static_metadata": {"arch": "amd64"}})
    assert status == 201 and (body["name"], body["concurrency"], body["metadata"]) == (name, 2, {"arch": "amd64"})
    assert call("/worker", key=body["key"])[1]["id"] == body["id"]
    again = call(f"/workers/{body['id']}", key=caller("view_worker")[1])[1]
    assert "key" not in again and body["key"] not in str(again)


def test_register_needs_add_worker() -> None:
    """Without work.add_worker registering is 403; anonymous callers get 401."""
    name = unique("builder")
    assert call("/workers", "POST", caller("view_worker")[1], {"name": name})[0] == 403
    assert call("/workers", "POST", None, {"name": name})[0] == 401
    assert not Worker.objects.filter(name=name).exists()


def test_register_a_taken_name_is_409() -> None:
    """A second worker of one name is refused with 409."""
    name = unique("builder")
    assert call("/workers", "POST", registrar(), {"name": name})[0] == 201
    assert call("/workers", "POST", registrar(), {"name": name})[0] == 409


def test_register_a_name_with_surrounding_spaces_is_422() -> None:
    """A name that is not stripped is refused."""
    assert call("/workers", "POST", registrar(), {"name": " padded "})[0] == 422


def test_list_shows_connection_and_running_requests() -> None:
    """A connected worker running a request is listed as connected, with that request."""
    on, _ = worker_key()
    mark_connected(on.pk, timezone.now())
    given = running(on=on)
    status, page = call(f"/workers?prefix={quote(on.name)}", key=caller("view_worker")[1])
    assert status == 200 and len(page["items"]) == 1
    item = page["items"][0]
    assert (item["connection"], [r["id"] for r in item["running"]]) == ("connected", [given.pk])


def test_list_shows_metadata_written_around_the_checks_as_none() -> None:
    """A worker whose stored metadata is not an object (a shell, an old version) is listed with none."""
    odd, _ = worker_key()
    Worker.objects.filter(pk=odd.pk).update(static_metadata=["gpu"], dynamic_metadata="amd64")
    status, page = call(f"/workers?prefix={quote(odd.name)}", key=caller("view_worker")[1])
    assert status == 200
    item = page["items"][0]
    assert (item["static_metadata"], item["dynamic_metadata"], item["metadata"]) == ({}, {}, {})


def test_list_filters_by_connection() -> None:
    """connection=lost keeps workers connected but silent for WORKER_LOST_AFTER_S; connected the others."""
    prefix = unique("fleet")
    lost, live, idle = (register_worker(f"{prefix}-{state}")[0] for state in ("lost", "live", "idle"))
    mark_connected(lost.pk, timezone.now() - timedelta(hours=1))
    mark_connected(live.pk, timezone.now())
    key = caller("view_worker")[1]

    def names(connection: str) -> set[str]:
        return {item["name"] for item in call(f"/workers?prefix={prefix}&connection={connection}", key=key)[1]["items"]}

    assert (names("lost"), names("connected"), names("disconnected")) == ({lost.name}, {live.name}, {idle.name})


def test_list_walks_pages_by_name() -> None:
    """Following next with limit=1 sees each matching worker once, by name."""
    prefix = unique("fleet")
    made = sorted(register_worker(f"{prefix}-{n}")[0].name for n in range(3))
    key = caller("view_worker")[1]
    seen: list[str] = []
    url: str | None = f"/workers?prefix={prefix}&limit=1"
    while url is not None:
        page = call(url, key=key)[1]
        seen += [item["name"] for item in page["items"]]
        url = page["next"]
    assert seen == made


def test_reading_workers_needs_view_worker() -> None:
    """Listing or getting workers without work.view_worker is 403."""
    on, _ = worker_key()
    key = caller("add_workrequest")[1]
    assert call("/workers", key=key)[0] == 403
    assert call(f"/workers/{on.pk}", key=key)[0] == 403


def test_unknown_worker_is_404() -> None:
    """A worker id that does not exist is 404."""
    answer = call("/workers/999999999", key=caller("view_worker")[1])
    assert answer == (404, {"detail": "worker 999999999 does not exist"})


def test_disable_refuses_its_token_everywhere() -> None:
    """A disabled worker's token is revoked (announced, so its sockets close) and its HTTP calls are refused."""
    on, key = worker_key()
    status, body = call(f"/workers/{on.pk}/disable", "POST", caller("change_worker")[1])
    assert status == 200 and body["enabled"] is False
    assert Announcement.objects.filter(kind=Announcement.REVOKED, token_id=on.token_id).exists()
    assert call("/worker", key=key)[0] == 401


def test_disable_needs_change_worker() -> None:
    """Without work.change_worker disabling is 403 and the worker stays enabled."""
    on, key = worker_key()
    assert call(f"/workers/{on.pk}/disable", "POST", caller("view_worker")[1])[0] == 403
    assert call("/worker", key=key)[0] == 200


def test_enable_lets_a_disabled_worker_call_again() -> None:
    """Enabling a disabled worker makes its key work again."""
    on, key = worker_key()
    changer = caller("change_worker")[1]
    call(f"/workers/{on.pk}/disable", "POST", changer)
    status, body = call(f"/workers/{on.pk}/enable", "POST", changer)
    assert status == 200 and body["enabled"] is True
    assert call("/worker", key=key)[0] == 200
