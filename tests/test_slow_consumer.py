"""A slow consumer: its bounded send queue overflows, it is closed with 4408, and after reconnecting
it gets every stored message it had not acked; the server's memory stays bounded."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests import server_log
from tests.cluster import http_json
from tests.protocol import (
    TIMEOUT_S,
    auth,
    b64,
    connect,
    drain_until,
    make_token,
    make_topic,
    make_user,
    publish,
    recv_json,
    send_json,
    subscribe,
    unique,
)
from tests.servers import ServerProcess, start_server

TEST_BUDGET_S = 60.0


@pytest.fixture
def small_queue_server() -> Iterator[ServerProcess]:
    """A server on the session database whose per-connection send queue holds 50 frames."""
    server = start_server(os.environ["DATABASE_URL"], SEND_QUEUE_FRAMES="50")
    yield server
    server.stop()



def rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- 4. Slow consumer --------------------------------------------------------------------------

SLOW_TOTAL = 5000
# Below SEND_QUEUE_FRAMES: the producer's acks share the bounded queue, and one group commit pushes
# the acks of a whole batch at once, so a wider window would close the producer itself with 4408.
SLOW_WINDOW = 40
# A sanity bound on the server's resident memory growth while a consumer is stuck (the 4408 close
# itself shows the queue is bounded; 5000 x 1 KiB would fit in this bound even unbounded).
RSS_GROWTH_LIMIT_KIB = 64 * 1024


async def publish_pipelined(producer: ClientConnection, count: int, payload: str) -> list[str]:
    """Publish ``count`` messages with up to SLOW_WINDOW unacked; every one must be acked ok."""
    window = asyncio.Semaphore(SLOW_WINDOW)
    acked: list[str] = []

    async def send_all() -> None:
        for n in range(count):
            await window.acquire()
            await send_json(producer, {"payload": payload, "properties": {}, "context": n})

    async def read_acks() -> None:
        while len(acked) < count:
            ack = await recv_json(producer)
            assert ack["result"] == "ok" and ack["context"] == len(acked), ack
            acked.append(ack["messageId"])
            window.release()

    await asyncio.gather(send_all(), read_acks())
    return acked


async def test_slow_consumer_closed_then_redelivered(small_queue_server: ServerProcess) -> None:
    """A consumer that stops reading is closed with 4408 and gets every unacked message after reconnecting."""
    async with asyncio.timeout(TEST_BUDGET_S):
        server = small_queue_server
        slug = make_topic(policy="cache", dasf=False)
        stuck = await subscribe(server.ws, slug, probe=False)
        rss_before = rss_kib(server)

        producer = await connect(server.ws + slug)
        payload = b64(os.urandom(512).hex())  # 1 KiB of JSON text
        published = await publish_pipelined(producer, SLOW_TOTAL, payload)
        rss_after = rss_kib(server)
        assert len(set(published)) == SLOW_TOTAL

        # The stuck consumer read nothing so far. What its socket still holds ends with 4408.
        buffered = 0
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(20):
                while True:
                    await stuck.recv()
                    buffered += 1
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408, closed.value
        assert buffered < SLOW_TOTAL, "the consumer was never behind: nothing tested"

        assert server.proc is not None and server.proc.poll() is None, "the server died"
        assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB, f"server RSS grew {rss_after - rss_before} KiB"
        other = unique("other")
        make_topic(other, policy="cache", dasf=False)
        other_consumer = await subscribe(server.ws, other, probe=False)
        other_ack = await publish(await connect(server.ws + other), context="other")
        assert other_ack["result"] == "ok", other_ack
        assert await drain_until(other_consumer, other_ack["messageId"], timeout=10) == [other_ack["messageId"]]

        # Reconnected and reading (and acking) promptly, it gets every message it never acked: the
        # replay waits for room in the 50-frame send queue instead of overflowing it.
        consumer = await subscribe(server.ws, slug, probe=False)
        got: list[str] = []
        try:
            async with asyncio.timeout(30):
                while len(got) < SLOW_TOTAL:
                    delivered = await recv_json(consumer)
                    got.append(delivered["messageId"])
                    await send_json(consumer, {"messageId": delivered["messageId"]})
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            pytest.fail(f"the reconnected consumer, reading promptly, was closed with {code} after {len(got)} "
                        f"of {SLOW_TOTAL} replayed messages")
        assert got == published


# --- a stalled consumer hanging up while the server closes it ------------------------------------

# More than the loopback socket buffers hold (the sender's grows to 4 MiB): the server's sends to a
# consumer that reads nothing stall.
STALL_FRAMES = 160
STALL_PAYLOAD = "x" * 64 * 1024
SMALL_RCVBUF_BYTES = 16 * 1024


async def stalled_consumer(server: ServerProcess, slug: str, key: str) -> ClientConnection:
    """A consumer socket that reads (almost) nothing: a tiny receive buffer and a one-frame queue."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF_BYTES)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    opening = websockets.connect(f"{server.ws}{slug}/stalled", sock=sock, additional_headers=auth(key), max_size=None,
                                 max_queue=1)
    return await asyncio.wait_for(opening, TIMEOUT_S)


async def test_consumer_hanging_up_while_being_closed_logs_no_error(server: ServerProcess) -> None:
    """A consumer that hangs up while the server closes its stalled socket (rights revoked) logs no ERROR."""
    async with asyncio.timeout(TEST_BUDGET_S):
        user = make_user()
        key = make_token(user)
        slug = make_topic(public=False, anonymous=False, policy="disabled", dasf=False, consumers=(user,),
                          producers=(user,))
        stalled = await stalled_consumer(server, slug, key)
        try:
            producer = await connect(server.ws + slug, auth(key))
            for n in range(STALL_FRAMES):
                ack = await publish(producer, context=n, payload=STALL_PAYLOAD)
                assert ack["result"] == "ok", ack

            # Revoking the consume right closes both consumer sockets; the stalled one's close waits
            # behind its unsent frames. The twin, reading, shows the revocation has been handled.
            twin = await subscribe(server.ws, slug, "twin", headers=auth(key), probe=False)
            admin_key = make_token(make_user(is_staff=True, is_superuser=True))
            status, body = await asyncio.to_thread(
                http_json, f"{server.http}/api/v1/topics/{slug}/grants/{user.username}", "PUT",
                {"can_consume": False}, auth(admin_key))
            assert status == 200, body
            assert "error" in (await recv_json(twin))["result"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await twin.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        finally:
            stalled.transport.abort()
        assert (await publish(producer, context="after"))["result"] == "ok"
        server_log.check()
