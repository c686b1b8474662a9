"""Topic squatting through ``response_topic``: a request may only name a response topic in its
source's namespace, and an admin never takes over a response topic (with its requester's rights)
by accident. The server runs with Redis so that ``dasf_topic``'s changes reach its open sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection

from app.broker.models import Topic
from tests.bad_input import assert_error, closed_with
from tests.protocol import auth, connect, eventually, make_token, make_topic, make_user, publish, recv_json, subscribe
from tests.servers import ROOT, ServerProcess, server_env, start_server
from tests.services import require_redis


@pytest.fixture(scope="module")
def redis_url() -> str:
    return require_redis()


@pytest.fixture(scope="module")
def announced_server(_migrated: None, redis_url: str) -> Iterator[ServerProcess]:
    proc = start_server(os.environ["DATABASE_URL"], REDIS_URL=redis_url)
    yield proc
    proc.stop()


def dasf_topic(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py dasf_topic`` as an admin runs it, next to the server (same database and Redis)."""
    env = server_env(os.environ["DATABASE_URL"], REDIS_URL=redis_url)
    return subprocess.run([sys.executable, "manage.py", "dasf_topic", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def request(response_topic: str, context: int = 0) -> dict[str, object]:
    return {"payload": "", "context": context,
            "properties": {"response_topic": response_topic, "requestContext": context, "messageType": "request"}}


async def squat(server: ServerProcess, name: str) -> tuple[str, str]:
    """User B, a consumer of a public topic S, sends a request naming S_<name>: B's response topic
    S_<name> exists. Returns its slug and B's token."""
    squatter = make_user()
    source = make_topic(consumers=(squatter,))
    key = make_token(squatter)
    slug = f"{source}_{name}"
    producer = await connect(server.ws + source, auth(key))
    ack = await publish(producer, **request(slug))
    assert ack["result"] == "ok", ack
    return slug, key


async def attach(server: ServerProcess, slug: str, key: str) -> ClientConnection:
    """B's consumer on its response topic, attached (its collection cancelled)."""
    inbox = await connect(f"{server.ws}{slug}/python-backend-1", auth(key))
    await eventually(lambda: Topic.objects.get(slug=slug).garbage_collect_on is None, message="B attached")
    return inbox


async def convert(redis_url: str, slug: str, inbox: ClientConnection, *grants: str) -> list[dict[str, object]]:
    """The admin converts B's response topic; returns once the server applied it (B's consumer was
    closed with 4403), with what B's consumer got."""
    done = dasf_topic(redis_url, slug, "--new", "--convert-response-topic", *grants)
    assert done.returncode == 0, done
    frames, code = await closed_with(inbox)
    assert code == 4403, frames
    return frames


async def test_request_cannot_create_a_topic_outside_its_source(announced_server: ServerProcess) -> None:
    """A request naming ``payroll`` as its response topic is refused (context echoed) and creates nothing."""
    source = make_topic()
    name = f"payroll-{source}"
    producer = await connect(announced_server.ws + source)
    ack = await publish(producer, **request(name, context=7))
    assert_error(ack, "response topic", f"{source}_")
    assert ack["context"] == 7
    assert not Topic.objects.filter(slug=name).exists()


async def test_new_refuses_an_existing_response_topic(announced_server: ServerProcess, redis_url: str) -> None:
    """``dasf_topic <response topic> --new -c A -p A`` fails and grants A nothing."""
    slug, _ = await squat(announced_server, "payroll")
    owner = make_user()
    done = dasf_topic(redis_url, slug, "--new", "-c", owner.username, "-p", owner.username)
    assert done.returncode != 0 and "--convert-response-topic" in done.stderr, done
    info = json.loads(dasf_topic(redis_url, slug, "-i").stdout)
    assert info["is_response_topic"] and owner.username not in info["consumers"] + info["producers"], info


async def test_conversion_closes_the_requesters_consumer(announced_server: ServerProcess, redis_url: str) -> None:
    """B's open consumer on its response topic gets an error and 4403 when the admin converts the topic."""
    slug, key = await squat(announced_server, "payroll")
    frames = await convert(redis_url, slug, await attach(announced_server, slug, key))
    assert len(frames) == 1, frames
    assert_error(frames[0], "not allowed to consume")


async def test_conversion_leaves_the_requester_without_rights(announced_server: ServerProcess, redis_url: str) -> None:
    """After the conversion B may neither consume nor publish, and A gets none of B's messages."""
    slug, key = await squat(announced_server, "payroll")
    inbox = await attach(announced_server, slug, key)
    answer = await connect(announced_server.ws + slug, auth(key))
    assert (await publish(answer, context="before"))["result"] == "ok"  # B may answer: it consumes S
    owner = make_user()
    await convert(redis_url, slug, inbox, "-c", owner.username, "-p", owner.username)
    topic = Topic.objects.get(slug=slug)
    assert (topic.response_for_id, topic.garbage_collect_on, topic.created_by) == (None, None, "")
    assert json.loads(dasf_topic(redis_url, slug, "-i").stdout)["consumers"] == [owner.username]
    assert_error(await publish(answer, context="after"), "not allowed to publish")
    frames, code = await closed_with(await connect(f"{announced_server.ws}{slug}/spy", auth(key)))
    assert code == 4403, frames
    owner_key = make_token(owner)
    mine = await subscribe(announced_server.ws, slug, headers=auth(owner_key))  # the probe first: no replay of B's
    ack = await publish(await connect(announced_server.ws + slug, auth(owner_key)), context="mine")
    assert ack["result"] == "ok" and (await recv_json(mine))["messageId"] == ack["messageId"]


async def test_converted_topic_is_no_response_topic(announced_server: ServerProcess, redis_url: str) -> None:
    """A request naming the converted topic as its response topic again is refused, context echoed."""
    slug, key = await squat(announced_server, "payroll")
    await convert(redis_url, slug, await attach(announced_server, slug, key))
    source = slug.rsplit("_", 1)[0]
    producer = await connect(announced_server.ws + source, auth(key))
    ack = await publish(producer, **request(slug, context=3))
    assert_error(ack, "response topic")
    assert ack["context"] == 3
    assert not Topic.objects.get(slug=slug).is_response_topic
