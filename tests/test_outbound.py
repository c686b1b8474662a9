"""A connection's send queue (consumers/outbound.py) and the receive queue and write flag of its
websocket protocol (app/server/inbox.py): an idle connection holds no task, queue or waiter list,
and they behave as the asyncio primitives they replace."""

from __future__ import annotations

import asyncio
from typing import Any

from app.server.inbox import Flag, Inbox
from consumers.outbound import Outbound

WAIT_S = 5.0


class Socket:
    """An ASGI send that records what it is given; while ``blocked`` is clear it does not return."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.blocked = asyncio.Event()
        self.blocked.set()
        self.changed = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.blocked.wait()
        self.sent.append(message)
        self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.sent) < count:
                self.changed.clear()
                await self.changed.wait()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]


async def test_idle_outbound_holds_no_task_and_no_queue() -> None:
    """Frames go out in order; once they are sent the drain task has ended and the queue is gone."""
    socket = Socket()
    outbound = Outbound(socket.send, 10, 1 << 20)
    assert outbound._task is None and outbound._frames is None
    for text in ("a", "b", "c"):
        assert outbound.push(text)
    await socket.until(3)
    assert socket.texts() == ["a", "b", "c"]
    assert outbound._task is None and outbound._frames is None and outbound.queued_bytes == 0
    assert outbound.push("d")
    await socket.until(4)
    assert socket.texts()[-1] == "d"


async def test_close_flushes_then_sends_the_close_frame_and_nothing_after() -> None:
    """close() sends what is queued, then the close frame; what is pushed after close is not sent."""
    socket = Socket()
    socket.blocked.clear()
    outbound = Outbound(socket.send, 10, 1 << 20)
    outbound.push("a")
    outbound.push("b")
    closing = asyncio.ensure_future(outbound.close(4408))
    await asyncio.sleep(0)
    outbound.push("late")
    socket.blocked.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert [m.get("text", m.get("code")) for m in socket.sent] == ["a", "b", 4408]


async def test_overflow_refuses_the_frame_and_close_drops_the_queue() -> None:
    """A push past the frame limit is refused; close() then drops what was queued and sends only the close."""
    socket = Socket()
    socket.blocked.clear()
    outbound = Outbound(socket.send, 2, 1 << 20)
    assert outbound.push("a")  # taken by the drain task, waiting on the socket
    await asyncio.sleep(0)
    assert outbound.push("b") and outbound.push("c")
    assert not outbound.push("d")
    assert outbound.overflowed
    closing = asyncio.ensure_future(outbound.close(4408))
    await asyncio.sleep(0)
    socket.blocked.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert socket.sent == [{"type": "websocket.close", "code": 4408}]


async def test_wait_room_returns_once_frames_are_sent() -> None:
    """wait_room() waits while the queue is full and returns as the socket takes frames."""
    socket = Socket()
    socket.blocked.clear()
    outbound = Outbound(socket.send, 2, 1 << 20)
    outbound.push("a")
    await asyncio.sleep(0)
    outbound.push("b")
    outbound.push("c")
    waiting = asyncio.ensure_future(outbound.wait_room(2))
    await asyncio.sleep(0)
    assert not waiting.done()
    socket.blocked.set()
    await asyncio.wait_for(waiting, WAIT_S)
    assert outbound.has_room(2)


async def test_inbox_hands_items_over_in_order_to_a_waiting_reader() -> None:
    """Inbox.get waits for put_nowait and returns items in the order they were put."""
    inbox = Inbox()
    getting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not getting.done()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await asyncio.wait_for(getting, WAIT_S) == 1
    assert not inbox.empty()
    assert await inbox.get() == 2
    assert inbox.empty()


async def test_flag_wait_returns_when_set_and_at_once_while_set() -> None:
    """Flag.wait blocks while cleared and returns once set; while set it returns without waiting."""
    flag = Flag(True)
    assert await asyncio.wait_for(flag.wait(), WAIT_S)
    flag.clear()
    waiting = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    flag.set()
    assert await asyncio.wait_for(waiting, WAIT_S)
