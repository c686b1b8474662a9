"""Helpers of the Pulsar subscription tests: consumers and producers on ``/ws/v2/`` for topics
that are not ``supports_dasf``, refused handshakes, and frames that must not come."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from tests.bad_input import recv
from tests.protocol import TIMEOUT_S, connect, publish, send_json
from tests.servers import ServerProcess

CONSUMER = "v2/consumer/persistent/public/default/"
PRODUCER = "v2/producer/persistent/public/default/"
# How long "nothing more arrives" is watched, after a later marker did arrive.
QUIET_S = 0.4


def consumer_url(server: ServerProcess, slug: str, sub: str = "sub", query: str = "") -> str:
    return f"{server.ws}{CONSUMER}{slug}/{sub}" + (f"?{query}" if query else "")


async def consumer(server: ServerProcess, slug: str, sub: str = "sub", query: str = "",
                   headers: dict[str, str] | None = None) -> ClientConnection:
    return await connect(consumer_url(server, slug, sub, query), headers)


async def producer(server: ServerProcess, slug: str) -> ClientConnection:
    return await connect(f"{server.ws}{PRODUCER}{slug}")


async def send(prod: ClientConnection, n: int, **fields: Any) -> str:
    """Publish message ``n``; its messageId once acked ok."""
    ack = await publish(prod, context=n, **fields)
    assert ack["result"] == "ok", ack
    return str(ack["messageId"])


async def refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """The HTTP status and body of a handshake that must be refused."""
    with pytest.raises(InvalidStatus) as caught:
        await connect(url, headers)
    response = caught.value.response
    return response.status_code, response.body.decode() if response.body else ""


async def accepted_eventually(url: str) -> ClientConnection:
    """Connect, retrying while refused (a consumer that just left is released asynchronously)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        try:
            return await connect(url)
        except InvalidStatus:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)  # bounded-poll


async def message(ws: ClientConnection) -> dict[str, Any]:
    frame = await recv(ws)
    assert "messageId" in frame, frame
    return frame


async def ack(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await send_json(ws, {"messageId": frame["messageId"]})


async def quiet(ws: ClientConnection, seconds: float = QUIET_S) -> None:
    """Nothing arrives on ``ws`` for ``seconds`` (call after a later marker arrived elsewhere)."""
    try:
        frame = await asyncio.wait_for(recv(ws), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame {frame}")


async def end_of_topic_round_trip(ws: ClientConnection) -> None:
    """Everything ``ws`` sent before was handled: an isEndOfTopic is answered next (an error frame
    for an earlier frame would come first)."""
    await send_json(ws, {"type": "isEndOfTopic"})
    assert await recv(ws) == {"endOfTopic": False}


async def collect(sockets: list[ClientConnection], total: int, *, acked: bool = True) -> list[list[dict[str, Any]]]:
    """Read from every socket until ``total`` messages arrived in all (acked when ``acked``)."""
    got: list[list[dict[str, Any]]] = [[] for _ in sockets]
    done = asyncio.Event()

    async def read(index: int) -> None:
        while True:
            frame = await message(sockets[index])
            got[index].append(frame)
            if acked:
                await ack(sockets[index], frame)
            if sum(map(len, got)) >= total:
                done.set()

    readers = [asyncio.create_task(read(i)) for i in range(len(sockets))]
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return got
