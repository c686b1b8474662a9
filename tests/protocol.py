"""Small helpers for protocol tests: topics, tokens, and JSON over websockets under timeouts."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from functools import cache
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

TIMEOUT_S = 10.0
# Client sockets opened by a test; the conftest closes them after it.
OPEN: list[ClientConnection] = []


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_topic(
    slug: str | None = None,
    *,
    public: bool = True,
    anonymous: bool = True,
    policy: str | None = None,
    dasf: bool = True,
    consumers: tuple[Any, ...] = (),
    producers: tuple[Any, ...] = (),
) -> str:
    """Create a topic the way ``dasf_topic`` does; returns its slug."""
    from guardian.utils import get_anonymous_user

    from app.broker.models import Topic
    from app.broker.permissions import grant

    topic = Topic.objects.create(
        slug=slug or unique(), is_public=public, store_messages=policy, supports_dasf=dasf
    )
    if anonymous:
        grant(get_anonymous_user(), topic, "can_consume")
    for user in consumers:
        grant(user, topic, "can_consume")
    for user in producers:
        grant(user, topic, "can_produce")
    return topic.slug


def make_user(name: str | None = None, **fields: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create(username=name or unique("user"), **fields)


# A password the staff users of a module share: Django's hash of it (PBKDF2, a million rounds, 0.3 s)
# is made once, not once per user; the server still checks it against the stored hash at each login.
STAFF_PASSWORD = "staff-password"


@cache
def password_hash(password: str) -> str:
    from django.contrib.auth.hashers import make_password

    return str(make_password(password))


def set_password(user: Any, password: str = STAFF_PASSWORD) -> str:
    """Give ``user`` ``password`` (hashed once per session) and save it; the password."""
    user.password = password_hash(password)
    user.save()
    return password


def make_token(user: Any) -> str:
    from app.auth.services import create_token

    return create_token(user)[1]


def key_with(*codenames: str) -> tuple[Any, str]:
    """A user granted these model permissions (``app.codename``) and nothing else, and a token of theirs."""
    from django.contrib.auth.models import Permission

    user = make_user()
    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user, make_token(user)


def superuser_key() -> str:
    """A token of a new superuser (staff too)."""
    return make_token(make_user(is_superuser=True, is_staff=True))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}"}


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


async def connect(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    ws = await asyncio.wait_for(websockets.connect(url, additional_headers=headers, max_size=None), TIMEOUT_S)
    OPEN.append(ws)
    return ws


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    # Not asyncio.wait_for: on Python 3.11 it returns a frame that arrived as the waiting task was
    # cancelled and drops the cancellation, so a task reading frames in a loop (tests/test_attach_ping.py
    # answer_pings) outlived its cancel and the test hung on `await task`.
    async with asyncio.timeout(timeout):
        raw = await ws.recv()
    frame = json.loads(raw)
    assert isinstance(frame, dict), frame
    return frame


async def send_json(ws: ClientConnection, value: Any) -> None:
    await ws.send(json.dumps(value))


async def publish(ws: ClientConnection, context: int | str = 0, **fields: Any) -> dict[str, Any]:
    """Send one message and return its ack."""
    frame: dict[str, Any] = {"payload": b64({"n": context}), "properties": {}, "context": context}
    frame.update(fields)
    await send_json(ws, frame)
    return await recv_json(ws)


async def subscribe(base: str, slug: str, sub: str = "sub", headers: dict[str, str] | None = None,
                    query: str = "", probe: bool = True) -> ClientConnection:
    """Open a consumer socket; with ``probe``, wait for (and ack) the api_info probe of a fresh topic."""
    ws = await connect(f"{base}{slug}/{sub}{query}", headers)
    if probe:
        frame = await recv_json(ws)
        assert frame["properties"]["messageType"] == "api_info", frame
        await send_json(ws, {"messageId": frame["messageId"]})
    return ws


async def eventually(check: Any, timeout: float = TIMEOUT_S, message: str = "condition") -> None:
    """Wait until ``check()`` is true (a database state the server reaches asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.02)  # bounded-poll


async def close_code_within(ws: ClientConnection, seconds: float) -> int | None:
    """Read (and drop) what ``ws`` gets for ``seconds``: the code the server closed it with, None if
    it is still open (1006 for a close without a close frame)."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    except TimeoutError:
        return None
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006


async def drain_until(consumer: ClientConnection, marker: str, timeout: float = 30.0,
                      ack: bool = True) -> list[str]:
    """messageIds received (acked when ``ack``) up to and including ``marker``."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1] != marker:
            got = await recv_json(consumer)
            assert "messageId" in got, got
            seen.append(got["messageId"])
            if ack:
                await send_json(consumer, {"messageId": got["messageId"]})
    return seen
