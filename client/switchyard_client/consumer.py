"""Consumers (``/ws/v2/consumer/...``, a durable named subscription) and readers
(``/ws/v2/reader/...``, no subscription): asynchronous iterators of ``Message``.

Both keep reading across reconnects. A consumer's unacked messages come back from the broker on the
next connection and are handed over once (acks.py); a reader starts again after the last message it
handed over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from switchyard_client import codec
from switchyard_client.acks import ACKED_MEMORY, Ledger, OnAck, OnDelivery
from switchyard_client.errors import ClientClosed, ConnectionRefused, ServerError
from switchyard_client.frames import ConsumerAck, MessageIdFrame, PermitFrame
from switchyard_client.link import Dialer, Link
from switchyard_client.message import Message

logger = logging.getLogger("switchyard_client")

SubscriptionType = Literal["exclusive", "failover", "shared", "key_shared"]
SUBSCRIPTION_TYPES: dict[str, str] = {
    "exclusive": "Exclusive", "failover": "Failover", "shared": "Shared", "key_shared": "Key_Shared",
}


class _Stream:
    """What consumers and readers share: a link whose deliveries queue up for ``__anext__``. The queue
    holds at most what the broker's flow control lets through unacked (``receiverQueueSize``)."""

    def __init__(self, dialer: Dialer, topic: str) -> None:
        self.topic = topic
        self._dialer = dialer
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._link: Link | None = None
        self._closed = False
        self.errors: list[ServerError] = []

    def _new_link(self, url: str, url_for_reconnect: Callable[[], str] | None = None) -> Link:
        return self._dialer.link(url, on_open=self._opened, on_frame=self._frame, on_lost=self._lost,
                                 url_for_reconnect=url_for_reconnect)

    async def start(self) -> None:
        raise NotImplementedError

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except ClientClosed:
            raise StopAsyncIteration from None

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message; ``TimeoutError`` when none came within ``timeout``. Raises the reason when
        the stream ended for good (refused), ``ClientClosed`` once closed."""
        if self._link is None:
            await self.start()
        assert self._link is not None
        if self._queue.empty():
            await self._wanting()
            if self._link.ended:
                raise self._link.failure or ClientClosed(self.topic)
            getter = asyncio.ensure_future(self._queue.get())
            ended = asyncio.ensure_future(self._ended())
            try:
                done, _ = await asyncio.wait({getter, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not getter.done():
                    getter.cancel()
            if getter in done:
                message = getter.result()
                await self._taken(message)
                return message
            if not done:
                raise TimeoutError(f"{self.topic}: no message within {timeout} s")
            return await self._after_end()
        message = self._queue.get_nowait()
        await self._taken(message)
        return message

    async def _ended(self) -> None:
        assert self._link is not None
        await self._link.wait_ended()

    async def _after_end(self) -> Message:
        assert self._link is not None
        raise self._link.failure or ClientClosed(self.topic)

    async def close(self) -> None:
        self._closed = True
        if self._link is not None:
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
        super().__init__(dialer, topic)
        self.subscription = subscription
        self._url = url
        self._pull = pull
        self._receiver_queue_size = receiver_queue_size
        self._ledger = Ledger()
        # Pull mode: messages asked for on this connection and not yet received.
        self._permitted = 0
        # Set when the current connection ended: the broker closes it once it deleted the subscription.
        self._connection_ended = asyncio.Event()

    async def start(self) -> None:
        if self._link is None:
            self._link = self._new_link(self._url)
            await self._link.start(self._dialer.connect_timeout_s)

    async def ack(self, message: Message) -> None:
        if self._ledger.acked(message.id) is OnAck.SEND:
            # A lost ack is sent again when the broker redelivers the message (acks.py).
            await self._send(ConsumerAck(messageId=message.id))

    async def nack(self, message: Message) -> None:
        if self._ledger.nacked(message.id):
            await self._send(MessageIdFrame(type="negativeAcknowledge", messageId=message.id))

    async def unsubscribe(self) -> None:
        """Delete the subscription (its cursor) and close. The broker refuses while other consumers are
        attached to it (an error frame, in ``errors``)."""
        await self.start()
        await self._send_raw({"type": "unsubscribe"})
        assert self._link is not None
        # Closed before the link reconnects: a new connection would create the subscription again.
        connection_ended = asyncio.ensure_future(self._connection_ended.wait())
        link_ended = asyncio.ensure_future(self._link.wait_ended())
        try:
            await asyncio.wait({connection_ended, link_ended}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connection_ended.cancel()
            link_ended.cancel()
        await self.close()

    async def _send_raw(self, frame: dict[str, Any]) -> None:
        assert self._link is not None
        await self._link.send(codec.dumps(frame))

    async def _wanting(self) -> None:
        if self._pull and self._permitted == 0 and self._link is not None and self._link.connected:
            self._permitted = self._receiver_queue_size
            await self._send(PermitFrame(type="permit", permitMessages=self._receiver_queue_size))

    async def _opened(self) -> None:
        self._permitted = 0
        self._connection_ended.clear()

    def _lost(self) -> None:
        self._ledger.connection_lost()
        self._permitted = 0
        self._connection_ended.set()

    async def _delivery(self, frame: dict[str, Any]) -> None:
        self._permitted = max(0, self._permitted - 1)
        message_id = frame["messageId"]
        decision = self._ledger.delivered(message_id)
        if decision is OnDelivery.SURFACE:
            self._queue.put_nowait(Message.of(frame, self.ack, self.nack))
        elif decision is OnDelivery.ACK:
            await self._send(ConsumerAck(messageId=message_id))


class Reader(_Stream):
    """Made by ``Client.reader``: every message from ``start`` on, changing nothing stored. Messages are
    acked to the broker (which only frees flow-control credit) as the application takes them."""

    def __init__(self, dialer: Dialer, url_for: Callable[[str], str], topic: str, start: str) -> None:
        super().__init__(dialer, topic)
        self._url_for = url_for
        self._start = start
        self._last: str | None = None
        # Ids handed over lately: a restart from ``start`` (the last one was removed meanwhile) skips them.
        self._seen: OrderedDict[str, None] = OrderedDict()
        # The connection each queued message came on.
        self._generation: dict[str, int] = {}

    async def start(self) -> None:
        if self._link is None:
            self._link = self._new_link(self._url_for(self._start), self._resume_url)
            await self._link.start(self._dialer.connect_timeout_s)

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
        raise failure or ClientClosed(self.topic)

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
        self._queue.put_nowait(Message.of(frame, no_ack, no_ack))
