"""Handshakes of the reader endpoint ``/ws/v2/reader/...`` (docs/architecture.md 18.5): a malformed
``messageId`` or ``receiverQueueSize``, an unknown ``messageId``, a missing topic, no consume right or
an invalid token refused before accept; ``readerName`` accepted; a revoked right closing the reader.
The rest of the reader tests, and the helpers imported here, are tests/test_pulsar_reader.py."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from tests.bad_input import closed_with
from tests.protocol import auth, connect, make_token, make_topic, make_user, recv_json, send_json, unique
from tests.servers import ServerProcess
from tests.test_pulsar_reader import READER, producer, published, read_ids, reader


async def refused(url: str, headers: dict[str, str] | None = None) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refusal:
        await connect(url, headers)
    return refusal.value


# --- handshakes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "?messageId=nonsense", "?receiverQueueSize=0", "?receiverQueueSize=lots", "?receiverQueueSize=10000000",
], ids=["message-id", "queue-zero", "queue-nan", "queue-huge"])
async def test_bad_parameters_refused_400(server: ServerProcess, query: str) -> None:
    """A malformed messageId or receiverQueueSize is refused with 400 naming the parameter."""
    refusal = await refused(f"{server.ws}{READER}{make_topic(dasf=False)}{query}")
    name = query[1:].split("=")[0]
    assert refusal.response.status_code == 400 and name.encode() in refusal.response.body, refusal.response.body


async def test_unknown_message_id_refused_400(server: ServerProcess) -> None:
    """A messageId that is no stored message of the topic is refused with 400."""
    slug = make_topic(dasf=False, policy="store")
    other = make_topic(dasf=False, policy="store")
    [elsewhere] = await published(await producer(server, other), 1)
    refusal = await refused(f"{server.ws}{READER}{slug}?messageId={elsewhere}")
    assert refusal.response.status_code == 400 and b"no stored message" in refusal.response.body


async def test_missing_topic_refused_404(server: ServerProcess) -> None:
    """A reader of a topic that does not exist is refused with 404."""
    refusal = await refused(f"{server.ws}{READER}{unique()}")
    assert refusal.response.status_code == 404


async def test_no_consume_right_refused_403(server: ServerProcess) -> None:
    """A reader without the consume right is refused with 403."""
    slug = make_topic(dasf=False, public=False, anonymous=False)
    refusal = await refused(f"{server.ws}{READER}{slug}", auth(make_token(make_user())))
    assert refusal.response.status_code == 403 and json.loads(refusal.response.body)["error"]


async def test_invalid_token_refused_401(server: ServerProcess) -> None:
    """A reader with an invalid token on a topic the anonymous principal may not read gets 401."""
    slug = make_topic(dasf=False, public=False, anonymous=False)
    refusal = await refused(f"{server.ws}{READER}{slug}", auth("not-a-token"))
    assert refusal.response.status_code == 401


async def test_reader_name_accepted(server: ServerProcess) -> None:
    """readerName is accepted (and unknown parameters ignored)."""
    slug = make_topic(dasf=False, policy="store")
    ws = await reader(server, slug, "?readerName=my-reader&cryptoFailureAction=FAIL")
    await send_json(ws, {"type": "isEndOfTopic"})
    assert await recv_json(ws) == {"endOfTopic": False}
    live = await published(await producer(server, slug), 1)
    assert await read_ids(ws, 1) == live


async def test_revoked_right_closes_reader(server: ServerProcess) -> None:
    """Removing the consume right of a reading principal closes the reader with 4403."""
    from guardian.shortcuts import remove_perm

    from app.broker.models import Topic

    owner = make_user()
    slug = make_topic(dasf=False, public=False, anonymous=False, consumers=(owner,))
    ws = await reader(server, slug, headers=auth(make_token(owner)))
    await send_json(ws, {"type": "isEndOfTopic"})
    assert await recv_json(ws) == {"endOfTopic": False}
    remove_perm("broker.can_consume", owner, Topic.objects.get(slug=slug))
    frames, code = await closed_with(ws)
    assert code == 4403, frames
