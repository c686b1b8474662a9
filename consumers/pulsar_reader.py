"""Reader sockets: ``/ws/v2/reader/<persistence>/<tenant>/<ns>/<topic>`` (docs/architecture.md 18.5).

A reader sees a topic's messages from a start position on without changing anything stored: no
cursor, no delivery rows, no attach ping, no ``api_info`` probe; its acks only free flow-control
credit. It joins the hub first, reads the stored history by sequence in pages that fit its send
queue, then takes live messages. What it cannot send now (no credit, a gap, a history read under
way) it reads from the database later, in order; on a ``disabled`` topic, live messages wait in
memory instead, at most ``receiverQueueSize`` of them (decisions in app/pulsar/reader.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from pydantic import ValidationError

from app.broker import services
from app.broker.admission import Refusal
from app.broker.delivery import needs_resync
from app.broker.hub import Delivered
from app.broker.runtime import get_runtime
from app.broker.topics import TopicView
from app.pulsar import history
from app.pulsar.handshake import Need, topic_refusal
from app.pulsar.params import params_problem
from app.pulsar.reader import (
    InFlight,
    Live,
    ReaderParams,
    Start,
    WaitingLive,
    history_page_size,
    live_action,
    start_after,
)
from consumers.base import CLOSE_FORBIDDEN, CLOSE_INTERNAL_ERROR, FrameConsumer
from consumers.frames import EndOfTopicFrame
from consumers.outbound import frame_size
from consumers.subscriber import REPLAY_PAGE

logger = logging.getLogger(__name__)


class TopicReader(FrameConsumer):

    metrics_kind = "pulsar_reader"
    # The hub's Subscriber protocol: a reader gets every message of its topic.
    shared = False
    subscription = "reader"

    def __init__(self) -> None:
        super().__init__()
        self.topic: TopicView | None = None
        # The highest sequence sent, or the start position before anything was.
        self.position = 0
        # The sequence of the message named by ``messageId``, read at the handshake.
        self.message_sequence: int | None = None
        # A history read is under way (or about to start): live stored messages are left to it.
        self.reading = False
        # The highest sequence left to a history read; it goes on until past it.
        self.noted = 0
        self.behind: int | None = None
        self.attached = False
        # The response topic whose collection the handshake cancelled: leaving schedules it again,
        # also when the client left before the accept or the reader was stopped.
        self.collection_held: TopicView | None = None
        # Rights changed between the handshake's lookup and the attach: look again then.
        self.rights_stale = False
        self.credit_freed = asyncio.Event()

    # --- handshake ------------------------------------------------------------------------

    async def before_accept(self) -> Refusal | None:
        self.runtime = get_runtime()
        self.slug: str = self.scope["url_route"]["kwargs"]["topic"]
        try:
            self.params = ReaderParams.from_query(self.scope.get("query_string", b""))
        except ValidationError as exc:
            return Refusal(HTTPStatus.BAD_REQUEST, params_problem(exc))
        self.subscription = self.params.readerName or self.subscription
        self.in_flight = InFlight(self.params.receiverQueueSize)
        self.waiting = WaitingLive(self.params.receiverQueueSize)
        # Watching before the lookup: a rights change while it runs still reaches this connection.
        self.runtime.hub.watch(self.slug, self)
        topic = await self.runtime.topic_view(self.slug, self.user, self.principal)
        refusal = topic_refusal(self.slug, topic, Need.CONSUME, self.scope.get("auth_error"))
        if refusal is not None:
            return refusal
        assert topic is not None
        start = self.params.start
        if start.kind is Start.AFTER_MESSAGE and topic.policy.stores:
            assert start.message_id is not None
            sequence = await database_sync_to_async(history.message_sequence)(topic.id, start.message_id)
            if sequence is None:
                return Refusal(HTTPStatus.BAD_REQUEST,
                               f"messageId {start.message_id} is no stored message of this topic")
            self.message_sequence = sequence
        self.topic = topic
        if topic.is_response_topic:
            # Attached, as a consumer would be: not collected while read (scheduled again on leaving).
            await database_sync_to_async(services.cancel_collection)(topic.id)
            self.collection_held = topic
        if topic.policy.stores:
            await self._join(topic)
        return None

    async def _join(self, topic: TopicView) -> None:
        """Take live messages from now on, and fix the start position, before the handshake is
        answered: whatever is published once the client is connected reaches it."""
        # Left to the history read until it has caught up (nothing is sent before the accept).
        self.reading = True
        self.runtime.hub.subscribe(self.slug, self)
        self.runtime.hub.unwatch(self.slug, self)  # a subscriber is told of rights changes as such
        # Messages published in other processes reach this one once its backplane has joined.
        await self.runtime.backplane.joined(self.slug)
        last = 0
        if self.params.start.kind is Start.LATEST:
            last = await database_sync_to_async(history.last_sequence)(topic.id)
        self.position = start_after(self.params.start, last_sequence=last, message_sequence=self.message_sequence)

    async def on_connect(self) -> None:
        topic = self.topic
        assert topic is not None
        if topic.policy.stores:
            self.spawn(self._guarded(self._read_history(topic)))
        else:
            # Nothing stored, nothing to read: live messages only, from now on.
            self.runtime.hub.subscribe(self.slug, self)
            self.runtime.hub.unwatch(self.slug, self)
        self.attached = True
        if self.rights_stale:
            self.recheck_rights()

    async def on_disconnect(self) -> None:
        if not hasattr(self, "runtime"):
            return
        hub = self.runtime.hub
        hub.unsubscribe(self.slug, self)
        hub.unwatch(self.slug, self)
        topic = self.collection_held
        if topic is not None and not hub.connection_count(self.slug):
            # A reader counts as a connection of its topic: the last one to leave a response topic
            # has it collected, as a consumer would (only its requester may read it).
            await database_sync_to_async(services.schedule_collection)(topic.id, self.principal, topic.policy)

    def grant_consume(self) -> None:
        """Never called: a reader does not wait for its topic (a missing one is refused with 404)."""

    # --- history --------------------------------------------------------------------------

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            # Left as it is, the reader would get no more messages: close it, the client reconnects.
            logger.exception("reading %s failed; closing the reader", self.slug)
            self.runtime.hub.unsubscribe(self.slug, self)
            self.close(CLOSE_INTERNAL_ERROR)

    def _read_later(self, sequence: int) -> None:
        """Leave everything up to ``sequence`` to a history read (started unless one runs)."""
        self.noted = max(self.noted, sequence)
        if not self.reading and self.topic is not None:
            self.reading = True
            self.spawn(self._guarded(self._read_history(self.topic)))

    async def _read_history(self, topic: TopicView) -> None:
        """Send stored messages after ``position`` as credit and the send queue allow, until past
        every live message left to this read; then live messages are sent as they come."""
        outbound = self.outbound
        assert outbound is not None
        most = max(1, min(REPLAY_PAGE, settings.SEND_QUEUE_FRAMES // 2))
        budget = settings.SEND_QUEUE_BYTES // 2
        sent = sent_bytes = 0
        while not self.closing:
            while self.in_flight.credit <= 0 and not self.closing:
                self.credit_freed.clear()
                await self.credit_freed.wait()
            limit = history_page_size(self.in_flight.credit, most, budget, sent_bytes // sent if sent else None)
            await outbound.wait_room(limit)
            if self.closing:
                return
            page = await database_sync_to_async(history.history)(topic.id, after=self.position, limit=limit)
            for replay in page.replays:
                # The stored frame is what live consumers got; the reader's carries redeliveryCount 0.
                text = Delivered(replay.frame, replay.message_id, replay.sequence).first_delivery_text()
                size = frame_size(text)
                await outbound.wait_room(1, size)
                if self.closing:
                    return
                self.position = replay.sequence
                self._send(replay.message_id, text)
                sent += 1
                sent_bytes += size
            if len(page.replays) < limit:
                self.position = max(self.position, page.last_sequence)
                if self.noted <= self.position:
                    # Synchronously with the check: a live message offered from now on is sent.
                    self.reading = False
                    return

    # --- delivery -------------------------------------------------------------------------

    def offer(self, item: Delivered) -> None:
        # Offers may come before the accept (a stored topic's reader joins the hub first): stored
        # ones are then left to the history read, which starts once the socket is open.
        if self.closing:
            return
        if item.sequence is None:
            self._offer_unstored(item)
            return
        action = live_action(self.position, item.sequence, credit=self.in_flight.credit, reading=self.reading)
        if action is Live.SEND:
            self.position = item.sequence
            self._send(item.message_id, item.first_delivery_text())
        elif action is Live.READ_LATER:
            self._read_later(item.sequence)

    def _offer_unstored(self, item: Delivered) -> None:
        """A message of a ``disabled`` topic: sent with credit, else it waits (bounded)."""
        if self.in_flight.credit > 0 and not self.waiting and self.outbound is not None:
            self._send(item.message_id, item.first_delivery_text())
            return
        if self.waiting.add(item) is not None and self.waiting.dropped == 1:
            # Once per stretch of drops: a reader that stopped acking must not flood the log.
            logger.warning("reader %s of %s (%s) does not ack: dropping its oldest live messages beyond "
                           "receiverQueueSize %d until it does", self.subscription, self.slug, self.principal,
                           self.waiting.size)

    def _send(self, message_id: str, text: str) -> None:
        self.in_flight.sent(message_id)
        self.push(text)

    def resync(self, database_last: int) -> None:
        """Called every resync interval with the topic's last sequence in the database."""
        topic = self.topic
        if topic is None or not topic.policy.stores or self.reading or database_last <= self.position:
            self.behind = None
            return
        if needs_resync(self.position, database_last, self.behind):
            self.behind = None
            self._read_later(database_last)
        else:
            self.behind = database_last

    # --- frames ---------------------------------------------------------------------------

    async def on_frame(self, raw: dict[str, Any]) -> None:
        if "type" in raw:
            if raw["type"] == "isEndOfTopic":
                self.push_model(EndOfTopicFrame(endOfTopic=False))
                return
            self.refuse_control_frame(raw, "; a reader reads only acks")
            return
        ack = self.read_ack(raw)
        if ack is None:
            return
        if not self.in_flight.ack(ack.messageId):
            self.refuse(f"unknown messageId {ack.messageId[:64]}", raw)
            return
        # Only credit: a reader's ack changes nothing stored.
        self.credit_freed.set()
        while self.in_flight.credit > 0 and not self.closing:
            waiting = self.waiting.take()
            if waiting is None:
                break
            self._send(waiting.message_id, waiting.first_delivery_text())

    # --- rights ---------------------------------------------------------------------------

    def recheck_rights(self) -> None:
        if self.closing:
            return
        if not self.attached:
            self.rights_stale = True
            return
        self.spawn(self._recheck_rights())

    async def _recheck_rights(self) -> None:
        topic, read = await self.reread_topic(self.slug)
        if not read:
            self._stop()
            self.close(CLOSE_INTERNAL_ERROR)
            return
        if self.closing:
            return
        if topic is None or not topic.rights.consume:
            self._stop()
            reason = "not allowed to consume this topic"
            if self.scope.get("auth_error"):
                reason += f" ({self.scope['auth_error']})"
            self.refuse(reason, None)
            self.close(CLOSE_FORBIDDEN)

    def _stop(self) -> None:
        """Nothing more goes out, not even what was queued."""
        self.runtime.hub.unsubscribe(self.slug, self)
        self.topic = None
        if self.outbound is not None:
            self.outbound.discard()
