"""Handshake authentication: tokens in the header or the query, and admin sessions."""

from __future__ import annotations

import pytest
import websockets
from django.test import Client

from app.broker.models import Topic
from app.broker.permissions import grant
from tests.protocol import connect, make_token, make_topic, make_user, recv_json


def private_topic_for(user) -> str:
    slug = make_topic(public=False, anonymous=False)
    grant(user, Topic.objects.get(slug=slug), "can_consume")
    return slug


async def assert_attached(ws) -> None:
    frame = await recv_json(ws)
    assert frame["properties"]["messageType"] == "api_info", frame


async def test_bearer_header(server):
    """``Authorization: Bearer <key>`` authenticates like ``Token``."""
    user = make_user()
    slug = private_topic_for(user)
    await assert_attached(await connect(f"{server.ws}{slug}/s", {"Authorization": f"Bearer {make_token(user)}"}))


async def test_query_token(server):
    """Browsers may pass ``?token=<key>``."""
    user = make_user()
    slug = private_topic_for(user)
    await assert_attached(await connect(f"{server.ws}{slug}/s?token={make_token(user)}"))


async def test_session_cookie(server):
    """A logged-in admin session authenticates the websocket."""
    user = make_user()
    slug = private_topic_for(user)
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    await assert_attached(await connect(f"{server.ws}{slug}/s", {"Cookie": cookie}))


async def test_unknown_session_is_anonymous(server):
    """A made-up session cookie is just anonymous."""
    slug = private_topic_for(make_user())
    ws = await connect(f"{server.ws}{slug}/s", {"Cookie": "sessionid=not-a-session"})
    assert "error" in (await recv_json(ws))["result"]
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd.code == 4403


async def test_session_from_another_origin_is_ignored(server):
    """A page on another origin cannot use a logged-in user's session cookie."""
    user = make_user()
    slug = private_topic_for(user)
    client = Client()
    client.force_login(user)
    headers = {"Cookie": f"sessionid={client.cookies['sessionid'].value}", "Origin": "http://evil.example"}
    ws = await connect(f"{server.ws}{slug}/s", headers)
    assert "error" in (await recv_json(ws))["result"]


async def test_session_with_unparsable_origin_is_ignored(server):
    """An Origin that is no URL (an IPv6 bracket left open) ignores the session, as another origin's
    does, instead of failing the handshake with 500."""
    user = make_user()
    slug = private_topic_for(user)
    client = Client()
    client.force_login(user)
    headers = {"Cookie": f"sessionid={client.cookies['sessionid'].value}", "Origin": "http://[::1"}
    ws = await connect(f"{server.ws}{slug}/s", headers)
    assert "error" in (await recv_json(ws))["result"]
