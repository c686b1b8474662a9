"""HTTP status and ping of topics (docs/dasf-protocol.md section 10 permissions), and status viewer sockets."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import timedelta

from django.utils import timezone

from app.broker.models import Topic
from tests import server_log
from tests.protocol import (
    auth,
    connect,
    eventually,
    make_token,
    make_topic,
    make_user,
    recv_json,
    send_json,
    subscribe,
    unique,
)


def call(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def http(*args, **kwargs) -> tuple[int, dict]:
    return await asyncio.to_thread(call, *args, **kwargs)


def set_seen(slug: str, ping_s_ago: float, pong_s_ago: float | None, api_info=None) -> None:
    now = timezone.now()
    Topic.objects.filter(slug=slug).update(
        last_ping=now - timedelta(seconds=ping_s_ago),
        last_pong=None if pong_s_ago is None else now - timedelta(seconds=pong_s_ago),
        api_info=api_info or {},
    )


async def test_online_is_200(server):
    """An answering topic reports 200 with its status and the names its module announced."""
    slug = make_topic()
    set_seen(slug, 5, 4, {"functions": [{"name": "add"}], "classes": []})
    status, body = await http(f"{server.http}/api/v1/topics/{slug}/status")
    assert status == 200
    assert body["status"] == "online" and body["api_info"] == {"functions": ["add"], "classes": []}


async def test_api_info_names_all_and_only_names(server):
    """The status API lists every announced name (no status-page bound); a malformed api_info is null."""
    slug = make_topic()
    set_seen(slug, 5, 4, {"functions": [{"name": f"f{i}"} for i in range(100)], "classes": [{"name": "C"}]})
    _, body = await http(f"{server.http}/api/v1/topics/{slug}/status")
    assert body["api_info"] == {"functions": [f"f{i}" for i in range(100)], "classes": ["C"]}
    set_seen(slug, 5, 4, {"functions": "add"})
    _, body = await http(f"{server.http}/api/v1/topics/{slug}/status")
    assert body["api_info"] is None


async def test_offline_is_503(server):
    """A topic that did not answer its last ping reports 503 offline."""
    slug = make_topic()
    set_seen(slug, 30, 60)
    status, body = await http(f"{server.http}/api/v1/topics/{slug}/status")
    assert (status, body["status"]) == (503, "offline")


async def test_offline_answer_is_logged_as_a_warning(server):
    """A 503 offline answer is logged as a WARNING (Django logs 5xx as ERROR), so it fails no log check."""
    slug = make_topic()
    set_seen(slug, 30, 60)
    status, _ = await http(f"{server.http}/api/v1/topics/{slug}/status")
    assert status == 503
    line = f"WARNING django.request: Service Unavailable: /api/v1/topics/{slug}/status"
    await eventually(lambda: any(line in logged for logged in server.output), message="the request to be logged")
    server_log.check()


async def test_never_pinged_is_503_unknown(server):
    """A topic never pinged reports 503 unknown."""
    status, body = await http(f"{server.http}/api/v1/topics/{make_topic()}/status")
    assert (status, body["status"]) == (503, "unknown")


async def test_missing_topic_is_404(server):
    """Asking for a topic that does not exist is a 404 with a JSON reason."""
    status, body = await http(f"{server.http}/api/v1/topics/no-such-topic-at-all/status")
    assert status == 404 and "does not exist" in body["detail"]


async def test_private_status_needs_a_right(server):
    """A private topic's status needs view-status, produce or consume rights."""
    viewer = make_user()
    slug = make_topic(public=False, anonymous=False)
    from app.broker.permissions import grant

    grant(viewer, Topic.objects.get(slug=slug), "can_view_status")
    assert (await http(f"{server.http}/api/v1/topics/{slug}/status"))[0] == 404
    status, _ = await http(f"{server.http}/api/v1/topics/{slug}/status", headers=auth(make_token(viewer)))
    assert status == 503


async def test_hidden_status_answers_like_a_missing_topic(server):
    """A private topic's status is, to whoever may not see it, the same 404 and body as a missing one."""
    hidden = make_topic(public=False, anonymous=False)
    missing = unique("missing")
    key = make_token(make_user())
    for headers in ({}, auth(key)):
        got = await http(f"{server.http}/api/v1/topics/{hidden}/status", headers=headers)
        expected = await http(f"{server.http}/api/v1/topics/{missing}/status", headers=headers)
        assert got == (404, {"detail": f"topic {hidden} does not exist"})
        assert expected == (404, {"detail": f"topic {missing} does not exist"})


async def test_hidden_ping_answers_like_a_missing_topic(server):
    """Pinging a private topic one may not see is the same 404 and body as pinging a missing one."""
    hidden = make_topic(public=False, anonymous=False)
    missing = unique("missing")
    got = await http(f"{server.http}/api/v1/topics/{hidden}/ping", method="POST")
    expected = await http(f"{server.http}/api/v1/topics/{missing}/ping", method="POST")
    assert got == (404, {"detail": f"topic {hidden} does not exist"})
    assert expected == (404, {"detail": f"topic {missing} does not exist"})
    assert Topic.objects.get(slug=hidden).last_ping is None


async def test_non_dasf_topic_is_400(server):
    """A topic excluded from pings has no status (400)."""
    status, _ = await http(f"{server.http}/api/v1/topics/{make_topic(dasf=False)}/status")
    assert status == 400


async def test_ping_reaches_consumers(server):
    """POST ping marks the topic pinged and sends a DASF ping to its consumers."""
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    status, body = await http(f"{server.http}/api/v1/topics/{slug}/ping", method="POST")
    assert status == 202 and body["consumers_reached"] == 1
    ping = await recv_json(consumer)
    assert ping["properties"] == {"requestContext": 1, "messageType": "ping", "response_topic": "status-ping"}
    assert Topic.objects.get(slug=slug).last_ping is not None


async def test_ping_needs_produce_right(server):
    """Pinging a private topic one may see needs the produce right too (403)."""
    viewer = make_user()
    slug = make_topic(public=False, anonymous=False)
    from app.broker.permissions import grant

    grant(viewer, Topic.objects.get(slug=slug), "can_view_status")
    status, body = await http(f"{server.http}/api/v1/topics/{slug}/ping", method="POST",
                              headers=auth(make_token(viewer)))
    assert status == 403 and "ping" in body["detail"]


async def test_viewer_gets_snapshot_then_change(server):
    """A status viewer gets the current status, then a frame when a pong makes the topic online."""
    slug = make_topic()
    set_seen(slug, 1, None)
    viewer = await connect(f"{server.ws}status/?topics={slug}")
    first = await recv_json(viewer)
    assert (first["type"], first["topic"], first["status"]) == ("status", slug, "unknown")
    assert await recv_json(viewer) == {"type": "synced", "topics": 1}
    answer = await connect(server.ws + "status-ping")
    await send_json(answer, {"properties": {"messageType": "pong", "source_topic": slug, "requestContext": "1"},
                             "context": "1", "payload": ""})
    assert (await recv_json(answer))["result"] == "ok"
    change = await recv_json(viewer)
    assert (change["topic"], change["status"]) == (slug, "online") and change["lastPong"]


async def pong(server, slug: str) -> None:
    answer = await connect(server.ws + "status-ping")
    await send_json(answer, {"properties": {"messageType": "pong", "source_topic": slug, "requestContext": "1"},
                             "context": "1", "payload": ""})
    assert (await recv_json(answer))["result"] == "ok"
    await answer.close()


async def test_viewer_gets_api_info_only_when_it_changed(server):
    """A viewer's first status of a topic carries apiInfo, a later one with the same API leaves it out,
    and a changed API is sent again."""
    slug = make_topic()
    set_seen(slug, 1, None, {"functions": [{"name": "add", "rpc_schema": {}}], "classes": []})
    viewer = await connect(f"{server.ws}status/?topics={slug}")
    first = await recv_json(viewer)
    assert first["apiInfo"] == {"functions": ["add"], "classes": [], "omitted": 0}, first
    assert (await recv_json(viewer))["type"] == "synced"
    await pong(server, slug)
    same = await recv_json(viewer)
    assert same["status"] == "online" and "apiInfo" not in same, same
    Topic.objects.filter(slug=slug).update(api_info={"functions": [{"name": "mul"}]})
    await pong(server, slug)
    changed = await recv_json(viewer)
    assert changed["apiInfo"] == {"functions": ["mul"], "classes": [], "omitted": 0}, changed
    Topic.objects.filter(slug=slug).update(api_info={})
    await pong(server, slug)
    assert (await recv_json(viewer))["apiInfo"] is None


async def test_viewer_sees_only_visible_topics(server):
    """Anonymous viewers get public topics' status, never a private one's."""
    public, private = make_topic(), make_topic(public=False, anonymous=False)
    viewer = await connect(f"{server.ws}status/?topics={private},{public}")
    frame = await recv_json(viewer)
    assert frame["topic"] == public
    owner = make_user()
    from app.broker.permissions import grant

    grant(owner, Topic.objects.get(slug=private), "can_consume")
    mine = await connect(f"{server.ws}status/?topics={private}", auth(make_token(owner)))
    assert (await recv_json(mine))["topic"] == private


async def test_viewer_skips_names_no_topic_may_have(server):
    """Names no topic may have (a NUL, a space) are not looked up: the viewer shows the valid one's status
    (on PostgreSQL a NUL failed the lookup, closing the socket with 1011)."""
    slug = make_topic()
    viewer = await connect(f"{server.ws}status/?topics=a%00b,{slug},a%20b")
    assert (await recv_json(viewer))["topic"] == slug
    assert (await recv_json(viewer)) == {"type": "synced", "topics": 1}


async def test_viewer_asking_only_for_names_no_topic_may_have_sees_none(server):
    """A viewer that named only topics no topic may have is shown none, as for missing ones, not every topic."""
    make_topic()
    viewer = await connect(f"{server.ws}status/?topics=a%00b,a%20b")
    assert (await recv_json(viewer)) == {"type": "synced", "topics": 0}


async def test_viewer_asking_for_too_many_topics(server):
    """A status socket asking for more than 500 topics gets an error frame and the first 500."""
    slug = make_topic()
    names = [slug, *(f"nx{i}" for i in range(600))]
    viewer = await connect(f"{server.ws}status/?topics={','.join(names)}")
    refusal = await recv_json(viewer)
    assert "error" in refusal["result"] and "at most 500 topics" in refusal["errorMsg"]
    assert (await recv_json(viewer))["topic"] == slug
