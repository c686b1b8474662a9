"""A producer on ``/ws/v2/producer/...``: ``send`` returns the message id once the broker acked it.

Every message carries a ``messageId`` the producer chose, so a message sent again after a lost
connection cannot be stored twice: the broker refuses a stored id ("duplicate messageId"), which
for a message sent again means it was stored before the connection broke. On a ``disabled`` topic
nothing is stored and such a message may be delivered twice (at least once).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from websockets.frames import CloseCode

from switchyard_client import codec
from switchyard_client.errors import ClientClosed, SendError, SendTimeout
from switchyard_client.frames import ProducerAck, PulsarPublishFrame
from switchyard_client.link import Dialer

# The ack of a message whose id is stored already.
DUPLICATE = "send-error:duplicate messageId"


@dataclass
class Outgoing:
    """One message for ``send_many``: what ``send`` takes as arguments."""

    data: bytes | str
    properties: Mapping[str, Any] | None = None
    key: str | None = None
    deliver_after: float | timedelta | None = None
    deliver_at: datetime | None = None


@dataclass
class _Pending:
    text: str
    message_id: str
    future: asyncio.Future[str]
    # The connection it last went out on (0: none yet).
    generation: int = 0
    resent: bool = False
    context: int = -1


@dataclass
class Acks:
    """The Sans-I/O side of a producer: messages sent and not yet acked, by ``context``, in order."""

    pending: dict[int, _Pending] = field(default_factory=dict)

    def settle(self, ack: ProducerAck) -> None:
        """Resolve the send ``ack`` answers; an ack nobody waits for (its send timed out) is dropped."""
        context = _context_of(ack.context)
        entry = None if context is None else self.pending.pop(context, None)
        if entry is None or entry.future.done():
            return
        stored_before = entry.resent and ack.result == DUPLICATE and ack.messageId == entry.message_id
        if stored_before:
            entry.future.set_result(entry.message_id)
        elif ack.ok:
            # The broker's id: Switchyard's is the one sent, Apache Pulsar's one of its own.
            entry.future.set_result(ack.messageId or entry.message_id)
        else:
            entry.future.set_exception(SendError(ack.result, ack.errorMsg, ack.messageId or None))

    def unsent_on(self, generation: int) -> list[_Pending]:
        """What has not gone out on connection ``generation``, in send order."""
        return [entry for entry in self.pending.values() if entry.generation != generation]

    def fail_largest(self, generation: int, error: BaseException) -> None:
        """The broker closed connection ``generation`` for a frame over its limit: the largest frame
        sent on it was (sent again, it would close every next connection until its timeout)."""
        sent = [entry for entry in self.pending.values() if entry.generation == generation]
        if sent:
            largest = max(sent, key=lambda entry: len(entry.text))
            self.pending.pop(largest.context, None)
            if not largest.future.done():
                largest.future.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        for entry in self.pending.values():
            if not entry.future.done():
                entry.future.set_exception(error)
        self.pending.clear()


class Producer:
    """Made by ``Client.producer``; close it, or let the client close it."""

    def __init__(self, dialer: Dialer, url: str, topic: str, send_timeout_s: float) -> None:
        self.topic = topic
        self.send_timeout_s = send_timeout_s
        self._link = dialer.link(url, on_open=self._resend, on_frame=self._frame, on_lost=self._lost,
                                 on_end=self._ended)
        self._connect_timeout_s = dialer.connect_timeout_s
        self._acks = Acks()
        self._contexts = itertools.count()

    async def start(self) -> Producer:
        await self._link.start(self._connect_timeout_s)
        return self

    async def send(self, data: bytes | str, *, properties: Mapping[str, Any] | None = None, key: str | None = None,
                   deliver_after: float | timedelta | None = None, deliver_at: datetime | None = None,
                   timeout: float | None = None) -> str:
        """Publish ``data`` (text is sent as UTF-8) and return its message id once the broker acked it:
        stored under the topic's policy. ``deliver_after`` (seconds) or ``deliver_at`` delays delivery
        to Shared and Key_Shared subscriptions. Raises ``SendError`` on an error ack, ``SendTimeout``
        when no ack came within ``timeout`` (default: the producer's), also while reconnecting."""
        entry = self._submit(Outgoing(data, properties, key, deliver_after, deliver_at))
        try:
            await self._transmit(entry)
        except BaseException:
            self._forget(entry)  # cancelled: like a timeout, the message may have been stored or not
            raise
        return await self._settled(entry, timeout)

    async def send_many(self, messages: Iterable[Outgoing | bytes | str], *, timeout: float | None = None) -> list[str]:
        """Publish every message without waiting for each ack (they go out in order), then wait for all
        of them; returns their ids in order. The first error ack or timeout raises, once all are settled."""
        entries: list[_Pending] = []
        try:
            for message in messages:
                entries.append(self._submit(message if isinstance(message, Outgoing) else Outgoing(message)))
                await self._transmit(entries[-1])
        except BaseException:
            # Cancelled or a bad item: nobody will wait for the ones submitted.
            for entry in entries:
                self._forget(entry)
            raise
        results = await asyncio.gather(*(self._settled(entry, timeout) for entry in entries), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [str(result) for result in results]

    @property
    def closed(self) -> bool:
        return self._link.ended

    async def close(self) -> None:
        await self._link.close()
        self._acks.fail_all(self._link.failure or ClientClosed(self.topic))

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _submit(self, message: Outgoing) -> _Pending:
        if self._link.ended:
            raise self._link.failure or ClientClosed(self.topic)
        context = next(self._contexts)
        message_id = str(uuid.uuid4())
        frame = PulsarPublishFrame(
            payload=codec.encode_payload(message.data), properties=dict(message.properties or {}), context=context,
            messageId=message_id, key=message.key, deliverAfterMs=_milliseconds(message.deliver_after),
            deliverAt=None if message.deliver_at is None else int(message.deliver_at.timestamp() * 1000),
        )
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = _Pending(codec.dump_frame(frame), message_id, future, context=context)
        self._acks.pending[context] = entry
        return entry

    async def _transmit(self, entry: _Pending) -> None:
        """Send ``entry`` now if a connection is open; otherwise the next one's ``_resend`` does. The
        socket writes a frame before its first await, so frames leave in the order of these calls."""
        if self._link.connected:
            entry.generation = self._link.generation
            await self._link.send(entry.text)

    async def _settled(self, entry: _Pending, timeout: float | None) -> str:
        limit = self.send_timeout_s if timeout is None else timeout
        try:
            # Not wait_for: up to Python 3.11 it returns the result of an ack that came in the same loop
            # iteration as a cancellation, and the cancellation (Ctrl-C, a task group's) is lost.
            async with asyncio.timeout(limit):
                return await asyncio.shield(entry.future)
        except TimeoutError:
            self._forget(entry)
            raise SendTimeout(f"{self.topic}: no ack within {limit} s (the message may have been stored)") from None
        except asyncio.CancelledError:
            self._forget(entry)
            raise

    def _forget(self, entry: _Pending) -> None:
        if self._acks.pending.get(entry.context) is entry:
            del self._acks.pending[entry.context]
        entry.future.cancel()

    async def _resend(self) -> None:
        """A new connection: send again, in order, what no ack answered on the lost one (and what was
        submitted meanwhile: sends wait while this runs)."""
        generation = self._link.generation
        while unsent := self._acks.unsent_on(generation):
            for entry in unsent:
                entry.resent = entry.resent or entry.generation != 0
                entry.generation = generation
                await self._link.send_while_opening(entry.text)

    def _lost(self) -> None:
        if self._link.close_code == CloseCode.MESSAGE_TOO_BIG:
            self._acks.fail_largest(self._link.generation, SendError(
                "send-error:message too big", "the broker closed the connection (1009): the message is over its "
                "frame limit"))

    def _ended(self) -> None:
        # Refused for good on a reconnect (no right, no such topic any more), or closed: nothing pending
        # will be acked.
        self._acks.fail_all(self._link.failure or ClientClosed(self.topic))

    async def _frame(self, frame: Any) -> None:
        ack = read_ack(frame)
        if ack is not None:
            self._acks.settle(ack)


def read_ack(frame: Any) -> ProducerAck | None:
    """``frame`` as an ack, None when it is none. Read leniently, as Pulsar's own clients do: Apache
    Pulsar leaves ``messageId`` out of error acks. An exception here would drop the connection, and
    the message sent again would get the same answer on the next one, for ever."""
    if not isinstance(frame, dict) or not isinstance(frame.get("result"), str):
        return None
    message_id, error = frame.get("messageId"), frame.get("errorMsg")
    return ProducerAck.model_construct(messageId=message_id if isinstance(message_id, str) else "",
                                       context=frame.get("context"), result=frame["result"],
                                       errorMsg=error if isinstance(error, str) else None)


def _context_of(echoed: Any) -> int | None:
    """The context a send went out with (an int), from its ack: Apache Pulsar echoes it as a string."""
    if type(echoed) is int:
        return echoed
    if isinstance(echoed, str) and echoed.isascii() and echoed.isdigit():
        return int(echoed)
    return None


def _milliseconds(delay: float | timedelta | None) -> int | None:
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    return max(0, round(seconds * 1000))
