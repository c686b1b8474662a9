"""The CQRS replica consumer's topic source: CQRS changes read off a Switchyard topic over the server's
Pulsar websocket API, through ``websockets`` (the one module that imports it). The RabbitMQ source is
relays/cqrs_consumer.py; what both share (retries in place, per-instance order, database outages)
is relays/cqrs_receiver.py; what a frame is, app/cqrs/topic.py.

The replica is a durable ``Exclusive`` subscription ``CQRS_QUEUE`` on ``CQRS_TOPIC`` of the server at
``CQRS_TOPIC_URL``, authenticated by ``CQRS_TOPIC_TOKEN`` (an Authorization header). The server keeps
its cursor: a replica down for a while gets what it missed when it connects again, and a message is
acked only once its transaction has committed, so a replica killed mid-stream loses nothing (what
comes back is a duplicate revision, a no-op).

Dead letters are the server's: the subscription has ``maxRedeliverCount`` and the default dead letter
topic ``<topic>-<subscription>-DLQ``, which the server creates for this principal and refuses to use
when someone else made it (the handshake gets 409: nobody can squat the name and read the dead
letters). A failed apply is retried here, in place; once it is to be dead-lettered it is negatively
acknowledged, again on each return (app/cqrs/topic.py ``DeadLetterNacks``), until the server moves
it; the later messages of its instance are held until that last nack is sent (else a message whose
move did not happen, its connection lost in between, would come back and be applied over them).
Nothing is published by the replica itself, so it needs no right but consuming the topic. Every
connection that ends counts a redelivery of each message it left unacked, so a message redelivered
half ``maxRedeliverCount`` times or more is a WARNING naming how many redeliveries it has left.

Frames are read by a task of their own, so the connection is read (and the server's pings answered)
while a message waits for the database; the server sends at most ``CQRS_PREFETCH_COUNT``
(``receiverQueueSize``) messages that are not acked, and what was read and not handled yet is
bounded too (``INBOX_MAX_CHARS``: past it the socket is not read until the frames are handled). A
refused handshake (no right to consume, no such topic; the subscription held by another consumer:
a standby, a WARNING the first time only) and a lost connection are logged and tried again with
back-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from app.cqrs.apply import Verdict
from app.cqrs.topic import (
    Change,
    DeadLetterNacks,
    Notice,
    Reject,
    Skip,
    ack_frame,
    connection_end,
    consumer_url,
    dead_letter_topic,
    nack_frame,
    read_frame,
    redeliveries_left,
    refusal_level,
    refusal_reason,
    token_in_clear,
)
from relays.cqrs_receiver import CqrsReceiver, Ended, Unavailable, reconnecting

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# The largest frame taken: a delivery is at most the master's frame limit or an outbox event's data
# (1 MiB each by default) grown by a third in base64, plus its attributes. Only a runaway server
# would send more; the bound keeps it from filling this process's memory.
MAX_FRAME_BYTES = 8 * 1024 * 1024
# Frames read and not handled yet, at most (characters; one frame is taken whatever its size): the
# server's receiverQueueSize bounds their number, not their size. Past it the reader waits, websockets
# buffers at most MAX_QUEUED_FRAMES more and stops reading the socket: the server is held back by TCP.
INBOX_MAX_CHARS = 2 * MAX_FRAME_BYTES
MAX_QUEUED_FRAMES = 4
# What a refused handshake most likely means, said with the server's reason.
ADVICE = {
    400: "CQRS_PREFETCH_COUNT (receiverQueueSize) must be at most the server's UNACKED_PER_CONNECTION",
    401: "CQRS_TOPIC_TOKEN is not a valid token there",
    403: "the token's user needs the consume right on the topic",
    404: "no such topic yet: the master's first event creates it, or create it with dasf_topic --new --no-dasf",
    409: "another consumer holds the Exclusive subscription, or its dead letter topic belongs to someone else",
}


class TopicConsumer:
    def __init__(
        self,
        topic: str | None = None,
        subscription: str | None = None,
        url: str | None = None,
        token: str | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.topic = topic or settings.CQRS_TOPIC or ""
        self.subscription = subscription or settings.CQRS_QUEUE or ""
        self.url = url or settings.CQRS_TOPIC_URL or ""
        self.token = token if token is not None else settings.CQRS_TOPIC_TOKEN
        self.on_ready = on_ready
        self.receiver: CqrsReceiver[Change] = CqrsReceiver("cqrs-topic-consumer", self.subscription)
        # Whether the last attempt was refused with 409: a standby waiting for the subscription.
        self.standing_by = False

    @property
    def where(self) -> str:
        """The subscription, for log lines (the URL without its query, never the token)."""
        parts = urlsplit(self.url)
        server = parts.netloc.rpartition("@")[2]  # never credentials a URL may carry
        return f"subscription {self.subscription} on topic {self.topic} at {parts.scheme}://{server}{parts.path}"

    async def run(self) -> None:
        """Consume until cancelled; never returns."""
        if not self.topic or not self.subscription or not self.url:
            raise RuntimeError("the CQRS topic consumer needs CQRS_TOPIC, CQRS_QUEUE and CQRS_TOPIC_URL")
        if token_in_clear(self.url, self.token):
            logger.warning("CQRS consumer: CQRS_TOPIC_TOKEN goes unencrypted to %s (ws://): anyone on the way can "
                           "read it and consume as the replica; use wss://", urlsplit(self.url).hostname)
        try:
            await reconnecting(self._session, self._unavailable)
        finally:
            await self.receiver.close()

    async def _session(self) -> Ended:
        """One connection: subscribe, handle frames until it closes."""
        url = consumer_url(self.url, self.topic, self.subscription, receiver_queue_size=settings.CQRS_PREFETCH_COUNT,
                           max_redeliver_count=settings.CQRS_TOPIC_MAX_REDELIVER_COUNT)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with connect(url, additional_headers=headers, open_timeout=CONNECT_TIMEOUT_S,
                           max_size=MAX_FRAME_BYTES, max_queue=MAX_QUEUED_FRAMES) as ws:
            logger.info("CQRS consumer: reading %s", self.where)
            self.standing_by = False
            if self.on_ready is not None:
                self.on_ready()
                self.on_ready = None
            session = _Session(ws, DeadLetterNacks(settings.CQRS_TOPIC_MAX_REDELIVER_COUNT),
                               dead_letter_topic(self.topic, self.subscription))
            inbox = _Inbox(INBOX_MAX_CHARS)
            reader = asyncio.create_task(_read(ws, inbox), name="cqrs-topic-reader")
            try:
                while (frame := await inbox.get()) is not None:
                    await self._frame(frame, session)
                await reader
            except ConnectionClosed as closed:
                return Ended(f"the connection to the server closed ({closed})", session.received)
            finally:
                reader.cancel()
                try:
                    await self.receiver.end_session()  # unsettled deliveries come back with the next connection
                finally:
                    await asyncio.wait({reader})
                    if not reader.cancelled():
                        reader.exception()  # retrieved: a close it ended with was handled above
        return Ended(connection_end(session.gave_back, ws.close_code, ws.close_reason or ""), session.received)

    async def _frame(self, frame: str | bytes, session: _Session) -> None:
        received = read_frame(frame)
        if isinstance(received, Notice):
            logger.warning("CQRS consumer: the server said: %s", received.text)
            return
        session.received = True
        if session.nacks.again(received.message_id):
            await session.nack(received.message_id, received.redelivery_count)
            return
        left = redeliveries_left(received.redelivery_count, session.nacks.max_redeliver_count)
        if left is not None:
            logger.warning("CQRS consumer: message %s was redelivered %d times (each connection that ends before "
                           "it is acked counts one): %d more and the server moves it to %s unapplied",
                           received.message_id, received.redelivery_count, left, session.dead_letters)
        if isinstance(received, Skip):
            logger.log(received.level, "CQRS consumer: message %s skipped: %s", received.message_id, received.reason)
            await session.ack_id(received.message_id)
        elif isinstance(received, Reject):
            logger.warning("CQRS event dead-lettered: %s", received.reason)
            await session.nack(received.message_id, received.redelivery_count)
        else:
            await self.receiver.take(received, session)

    def _unavailable(self, error: BaseException) -> Unavailable | None:
        standing_by, self.standing_by = self.standing_by, False
        if isinstance(error, InvalidStatus):
            status = error.response.status_code
            advice = ADVICE.get(status)
            self.standing_by = status == 409
            return Unavailable(
                f"the server refused {self.where}: {status} {refusal_reason(bytes(error.response.body or b''))}"
                + (f" ({advice})" if advice else ""), refusal_level(status, standing_by))
        if isinstance(error, (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed)):
            return Unavailable(f"cannot reach {self.where}: {error!r}")
        return None


class _Session:
    """Settles on one connection (relays/cqrs_receiver.py ``Settler``)."""

    def __init__(self, ws: ClientConnection, nacks: DeadLetterNacks, dead_letters: str) -> None:
        self.ws = ws
        self.nacks = nacks
        self.dead_letters = dead_letters
        self.received = False  # a delivery came
        self.gave_back = False  # the connection was closed here, for the unsettled messages to come again
        # Dead letters waiting for their last nack, by message id.
        self._moving: dict[str, asyncio.Future[None]] = {}

    async def ack(self, delivery: Change) -> None:
        await self.ack_id(delivery.message_id)

    async def ack_id(self, message_id: str) -> None:
        await self.ws.send(ack_frame(message_id))

    async def dead_letter(self, delivery: Change, verdict: Verdict) -> None:
        """Nacked, then waits (the instance's later deliveries held) until the nack that has the server
        move it is sent: the frames that drive the nacks are read meanwhile. Cancelled with the session,
        it comes back with the next connection and the held ones behind it."""
        logger.info("CQRS consumer: message %s goes to the dead letter topic %s (%s)", delivery.message_id,
                    self.dead_letters, verdict.reason)
        moving = asyncio.get_running_loop().create_future()
        self._moving[delivery.message_id] = moving
        try:
            await self.nack(delivery.message_id, delivery.redelivery_count)
            await moving
        finally:
            del self._moving[delivery.message_id]

    async def nack(self, message_id: str, redelivery_count: int) -> None:
        """Negatively acknowledged: the server redelivers it, or moves it to the dead letters once it
        was redelivered ``maxRedeliverCount`` times."""
        last = self.nacks.condemn(message_id, redelivery_count)
        await self.ws.send(nack_frame(message_id))
        if last:
            logger.debug("CQRS consumer: message %s nacked for the last time: the server moves it", message_id)
            moving = self._moving.get(message_id)
            if moving is not None and not moving.done():
                moving.set_result(None)

    async def give_back(self, deliveries: Sequence[Change]) -> None:
        # Every unacked message of a connection comes back, in order, when it closes.
        self.gave_back = True
        await self.ws.close(1000, "unsettled messages given back")


class _Inbox:
    """The frames read and not handled yet, at most ``max_chars`` of them (and always one): while it
    is full the reader waits. One reader puts, one loop gets."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self._frames: deque[str | bytes | None] = deque()
        self._room = asyncio.Event()
        self._arrived = asyncio.Event()

    async def put(self, frame: str | bytes) -> None:
        while self._frames and self.chars + len(frame) > self.max_chars:
            self._room.clear()
            await self._room.wait()
        self._frames.append(frame)
        self.chars += len(frame)
        self._arrived.set()

    def end(self) -> None:
        """No more frames: ``get`` returns None after the last one (whatever the bound)."""
        self._frames.append(None)
        self._arrived.set()

    async def get(self) -> str | bytes | None:
        while not self._frames:
            self._arrived.clear()
            await self._arrived.wait()
        frame = self._frames.popleft()
        if frame is not None:
            self.chars -= len(frame)
        self._room.set()
        return frame


async def _read(ws: ClientConnection, inbox: _Inbox) -> None:
    """Every frame into ``inbox`` as there is room, then None once the connection closed (raising
    ConnectionClosed when it did not close normally)."""
    try:
        async for frame in ws:
            await inbox.put(frame)
    finally:
        inbox.end()
