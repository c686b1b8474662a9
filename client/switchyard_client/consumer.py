"""Consumers (``/ws/v2/consumer/...``, a durable named subscription) and readers
(``/ws/v2/reader/...``, no subscription): asynchronous iterators of ``Message``.

Both keep reading across reconnects. A consumer's unacked messages come back from the broker on the
next connection and are handed over once (acks.py); a reader starts again after the last message it
handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, Self

from websockets.frames import CloseCode

from switchyard_client import codec
from switchyard_client.acks import ACKED_MEMORY, Ledger, OnAck, OnDelivery
from switchyard_client.errors import ClientClosed, ConnectionRefused, ServerError, SwitchyardError
from switchyard_client.frames import ConsumerAck, ControlFrame, MessageIdFrame, PermitFrame
from switchyard_client.link import Dialer, Link
from switchyard_client.message import Message

logger = logging.getLogger("switchyard_client")

SubscriptionType = Literal["exclusive", "failover", "shared", "key_shared"]
SUBSCRIPTION_TYPES: dict[str, str] = {
    "exclusive": "Exclusive", "failover": "Failover", "shared": "Shared", "key_shared": "Key_Shared",
}


class _Stream:
    """What consumers and readers share: a link whose deliveries queue up for ``__anext__``. The queue
    holds at most ``queue_limit`` messages: on Pulsar topics the broker's flow control
    (``receiverQueueSize``) keeps within it; DASF topics have none, and a full queue stops reading the
    socket, so what the application has not taken waits in the broker (which closes a consumer too far
    behind, 4408, and redelivers to its next connection)."""

    def __init__(self, dialer: Dialer, topic: str, queue_limit: int) -> None:
        self.topic = topic
        self._dialer = dialer
        # Messages, then None once the link ended.
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._queue_limit = max(1, queue_limit)
        self._room = asyncio.Event()
        self._link: Link | None = None
        self._closed = False
        # Receives waiting for a message (pull mode asks for more when a connection opens meanwhile).
        self._waiting = 0
        self.errors: list[ServerError] = []

    def _new_link(self, url: str, url_for_reconnect: Callable[[], str] | None = None) -> Link:
        return self._dialer.link(url, on_open=self._opened, on_frame=self._frame, on_lost=self._lost,
                                 on_end=lambda: self._queue.put_nowait(None), url_for_reconnect=url_for_reconnect)

    async def start(self) -> Self:
        """Open the socket now (a new subscription starts at the topic's latest message); returns the stream."""
        raise NotImplementedError

    async def _open(self, link: Link) -> None:
        """Start ``link`` as the stream's. One that never opened (refused, timed out, cancelled) is
        forgotten with its end, so the next ``receive`` tries again."""
        if self._closed:
            raise ClientClosed(self.topic)
        self._link = link
        try:
            await link.start(self._dialer.connect_timeout_s)
        except BaseException:
            if link.ended and self._link is link:
                self._link = None
                while not self._queue.empty():
                    self._queue.get_nowait()  # only its end: a link never opened delivered nothing
            raise

    @property
    def queued(self) -> int:
        """Messages received and not yet taken by the application."""
        size = self._queue.qsize()
        # Once the link ended, the queue ends with its end (None).
        return size - 1 if size and self._link is not None and self._link.ended else size

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except ClientClosed:
            raise StopAsyncIteration from None

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message; ``TimeoutError`` when none came within ``timeout`` (the first connection's
        opening included). Raises the reason when the stream ended for good (refused), ``ClientClosed``
        once closed."""
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if self._link is None:
                    await self.start()
                if self._queue.empty():
                    await self._wanting()
                self._waiting += 1
                try:
                    item = await self._queue.get()
                finally:
                    self._waiting -= 1
        except TimeoutError:
            if deadline.expired():
                raise TimeoutError(f"{self.topic}: no message within {timeout} s") from None
            raise
        self._room.set()
        if item is None:
            return await self._after_end()
        await self._taken(item)
        return item

    async def _put(self, message: Message) -> None:
        """Queue ``message`` for the application; while the queue is full, read nothing more (the class
        docstring says why)."""
        while self._queue.qsize() >= self._queue_limit:
            self._room.clear()
            await self._room.wait()
        self._queue.put_nowait(message)

    async def _after_end(self) -> Message:
        """The link ended (its ``None`` was taken from the queue)."""
        assert self._link is not None
        self._queue.put_nowait(None)  # every later receive ends alike
        raise self._link.failure or ClientClosed(self.topic)

    @property
    def closed(self) -> bool:
        """Closed by its owner (a stream refused for good stays until then: a reader may start again)."""
        return self._closed

    async def close(self) -> None:
        self._closed = True
        # What was queued can no longer be acked: the next connection's consumer gets it again.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._room.set()
        if self._link is None:
            self._queue.put_nowait(None)
        else:
            await self._link.close()

    async def __aenter__(self) -> _Stream:
        if self._link is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _wanting(self) -> None:
        """The application waits for a message and none is queued (pull mode asks for more)."""

    async def _taken(self, message: Message) -> None:
        """The application took ``message`` from the queue."""

    async def _opened(self) -> None:
        """A connection opened, before anything is read from it."""

    def _lost(self) -> None:
        """The connection ended."""

    async def _frame(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            return
        if isinstance(frame.get("messageId"), str) and "publishTime" in frame:
            await self._delivery(frame)
        elif isinstance(frame.get("result"), str) and "error" in frame["result"]:
            error = ServerError(frame["result"], str(frame.get("errorMsg", "")))
            logger.warning("%s: the broker refused a frame: %s", self.topic, error)
            self.errors.append(error)
            del self.errors[:-100]

    async def _delivery(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _send(self, frame: Any) -> bool:
        assert self._link is not None
        return await self._link.send(codec.dump_frame(frame))


class Consumer(_Stream):
    """Made by ``Client.subscribe``: iterate it (``async for message in consumer``), ack each message.
    The socket opens on the first ``receive`` (or ``async with``)."""

    def __init__(self, dialer: Dialer, url: str, topic: str, subscription: str, pull: bool,
                 receiver_queue_size: int) -> None:
        super().__init__(dialer, topic, receiver_queue_size)
        self.subscription = subscription
        self._url = url
        self._pull = pull
        self._receiver_queue_size = receiver_queue_size
        self._ledger = Ledger()
        # Pull mode: messages asked for on this connection and not yet received.
        self._permitted = 0
        # Ids in the queue, not yet taken: a message the broker takes back meanwhile is queued once.
        self._queued_ids: set[str] = set()

    async def start(self) -> Self:
        if self._link is None:
            await self._open(self._new_link(self._url))
        return self

    async def ack(self, message: Message) -> None:
        if self._ledger.acked(message.id) is OnAck.SEND:
            # A lost ack is sent again when the broker redelivers the message (acks.py).
            await self._send(ConsumerAck(messageId=message.id))

    async def nack(self, message: Message) -> None:
        if self._ledger.nacked(message.id):
            await self._send(MessageIdFrame(type="negativeAcknowledge", messageId=message.id))

    async def unsubscribe(self, timeout: float = 10.0) -> None:
        """Delete the subscription (its cursor) and close. Raises ``ServerError`` when the broker refuses
        (another consumer is attached to it) and the consumer stays open; ``SwitchyardError`` when the
        connection broke before the answer (the consumer is closed; the subscription may remain)."""
        await self.start()
        assert self._link is not None
        refused = len(self.errors)
        # The broker closes the socket once the subscription is gone: that close (1000) is the answer.
        self._link.last_connection()
        if not await self._send(ControlFrame(type="unsubscribe")):
            self._link.last_connection(False)
            raise SwitchyardError(f"{self.topic}: not connected, nothing unsubscribed (try again)")
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._link.ended:
            if len(self.errors) > refused:
                self._link.last_connection(False)
                raise self.errors[-1]
            if asyncio.get_running_loop().time() > deadline:
                self._link.last_connection(False)
                raise TimeoutError(f"{self.topic}: no answer to unsubscribe within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._link.wait_ended(), 0.05)
        answered = self._link.close_code == CloseCode.NORMAL_CLOSURE
        await self.close()
        if not answered:
            raise SwitchyardError(f"{self.topic}: the connection broke before the broker answered unsubscribe "
                                  "(the subscription may remain)")

    async def _wanting(self) -> None:
        if self._pull and self._permitted == 0 and self._link is not None and self._link.connected:
            self._permitted = self._receiver_queue_size
            await self._send(self._permit())

    def _permit(self) -> PermitFrame:
        return PermitFrame(type="permit", permitMessages=self._receiver_queue_size)

    async def _opened(self) -> None:
        self._permitted = 0
        if self._pull and self._waiting and self._queue.empty():
            # A receive waits since before this connection: its permits went with the lost one.
            assert self._link is not None
            self._permitted = self._receiver_queue_size
            await self._link.send_while_opening(codec.dump_frame(self._permit()))

    def _lost(self) -> None:
        self._ledger.connection_lost()
        self._permitted = 0

    async def _taken(self, message: Message) -> None:
        self._queued_ids.discard(message.id)

    async def _delivery(self, frame: dict[str, Any]) -> None:
        self._permitted = max(0, self._permitted - 1)
        message_id = frame["messageId"]
        decision = self._ledger.delivered(message_id)
        if decision is OnDelivery.SURFACE:
            if message_id not in self._queued_ids:
                self._queued_ids.add(message_id)
                await self._put(Message.of(frame, self.ack, self.nack))
        elif decision is OnDelivery.ACK:
            await self._send(ConsumerAck(messageId=message_id))
        if self._waiting and self._queue.empty():
            # Redeliveries of held messages used the permits up: a waiting receive needs more.
            await self._wanting()


class Reader(_Stream):
    """Made by ``Client.reader``: every message from ``start`` on, changing nothing stored. Messages are
    acked to the broker (which only frees flow-control credit) as the application takes them."""

    def __init__(self, dialer: Dialer, url_for: Callable[[str], str], topic: str, start: str,
                 receiver_queue_size: int = 1000) -> None:
        super().__init__(dialer, topic, receiver_queue_size)
        self._url_for = url_for
        self._start = start
        self._last: str | None = None
        # Ids handed over lately: a restart from ``start`` (the last one was removed meanwhile) skips them.
        self._seen: OrderedDict[str, None] = OrderedDict()
        # The connection each queued message came on.
        self._generation: dict[str, int] = {}

    async def start(self) -> Self:
        if self._link is None:
            await self._open(self._new_link(self._url_for(self._start), self._resume_url))
        return self

    def _resume_url(self) -> str:
        return self._url_for(self._last or self._start)

    async def _after_end(self) -> Message:
        assert self._link is not None
        failure = self._link.failure
        if isinstance(failure, ConnectionRefused) and failure.status == 400 and self._last is not None \
                and not self._closed:
            # The last message read was removed while disconnected: read again from the start, skipping
            # what was handed over.
            self._last = None
            self._link = None
            await self.start()
            return await self.receive()
        return await super()._after_end()

    async def _taken(self, message: Message) -> None:
        self._last = message.id
        # Only where it is in flight: a message read before a reconnect was sent again (and acked as
        # seen) on the new connection, or, live only on a disabled topic, not at all.
        assert self._link is not None
        if self._generation.pop(message.id, None) == self._link.generation:
            await self._send(ConsumerAck(messageId=message.id))

    async def _delivery(self, frame: dict[str, Any]) -> None:
        message_id = frame["messageId"]
        if message_id in self._seen:
            await self._send(ConsumerAck(messageId=message_id))
            return
        self._seen[message_id] = None
        while len(self._seen) > ACKED_MEMORY:
            self._seen.popitem(last=False)

        async def no_ack(_: Message) -> None:
            return None

        assert self._link is not None
        self._generation[message_id] = self._link.generation
        await self._put(Message.of(frame, no_ack, no_ack))
