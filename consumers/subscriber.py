"""Consumer sockets: ``/ws/<topic>/<subscription>`` and ``/ws/v2/consumer/.../<topic>/<subscription>``.

On attach: replay what this principal has not acked (publish order, ``redeliveryCount``), then
live messages; or, with nothing to replay on a DASF topic, an ``api_info`` probe. A consumer of a
DASF source topic has the topic pinged unless its latest ping was answered (app/availability/attach_pings.py). A
socket may open before its topic exists (the DASF requester does this for its response topic): it
waits and is attached when the topic is created for its principal. Stored messages lost on the fast path
(a gap in the sequence, or a topic whose database sequence ran ahead) are fetched from the database.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from app import codec
from app.availability.attach_pings import pings_on_attach
from app.broker import services
from app.broker.delivery import has_gap, is_duplicate, needs_resync, replay_page_size
from app.broker.hub import Delivered
from app.broker.models import RESERVED_TOPICS
from app.broker.naming import topic_name_error
from app.broker.runtime import get_runtime
from app.broker.services import Ack, ReplayRequest
from app.broker.topics import TopicView
from app.outages import outage
from app.pulsar.semantics import PathShape
from consumers.base import (
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NOT_FOUND,
    CLOSE_TRY_AGAIN_LATER,
    FrameConsumer,
)
from consumers.frames import EndOfTopicFrame
from consumers.outbound import frame_size
from consumers.probes import probe

REPLAY_PAGE = 500
# Replays in one catch-up before held messages are sent regardless (the resync loop goes on).
CATCH_UP_ROUNDS = 3

logger = logging.getLogger(__name__)


class TopicConsumer(FrameConsumer):

    metrics_kind = "dasf_consumer"
    topic: TopicView | None = None

    def __init__(self, path_shape: PathShape = PathShape.DASF) -> None:
        super().__init__()
        self.path_shape = path_shape

    async def on_connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        self.slug: str = kwargs["topic"]
        self.subscription: str = kwargs["subscription"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.shared = query.get("subscriptionType", [""])[0].lower() == "shared"
        self.runtime = get_runtime()
        # messageId -> whether it is stored (an ack must reach the database).
        self.unacked: dict[str, bool] = {}
        self.last_sequence = 0
        # Live messages held back while a replay is sent, and their size.
        self.buffer: list[Delivered] | None = None
        self.held_bytes = 0
        self.behind: int | None = None
        if self.slug in RESERVED_TOPICS:
            self.refuse(f"{self.slug} is a reserved name, not a topic", None)
            self.close(CLOSE_NOT_FOUND)
            return
        reason = topic_name_error(self.slug)
        if reason is not None:  # no topic can have this name: do not wait for one
            self.refuse(reason, None)
            self.close(CLOSE_NOT_FOUND)
            return
        # Waiting before the lookup: a grant or a rights change applied while it runs still finds
        # this connection (and attaches it, or has it look again).
        hub = self.runtime.hub
        hub.wait(self.slug, self)
        topic = await self.runtime.topic_view(self.slug, self.user, self.principal)
        if topic is None or not hub.is_waiting(self.slug, self):
            return  # waits for the topic, or was attached meanwhile
        hub.unwait(self.slug, self)
        if not topic.rights.consume:
            self._forbid()
        else:
            # As a task: the receive loop keeps reading acks while a long backlog is replayed.
            self._join()
            self.spawn(self._catch_up(topic, first_time=True))

    async def on_disconnect(self) -> None:
        if not hasattr(self, "runtime"):
            return
        self.runtime.hub.unsubscribe(self.slug, self)
        topic = self.topic
        if topic is not None and topic.is_response_topic and not self.runtime.hub.connection_count(self.slug):
            await database_sync_to_async(services.schedule_collection)(topic.id, self.principal, topic.policy)

    def _forbid(self) -> None:
        reason = "not allowed to consume this topic"
        if self.scope.get("auth_error"):
            reason += f" ({self.scope['auth_error']})"
        self.refuse(reason, None)
        self.close(CLOSE_FORBIDDEN)

    # --- attaching ------------------------------------------------------------------------

    def grant_consume(self) -> None:
        """Called by the hub when this principal may now consume the (new) topic."""
        self._join()
        self.spawn(self._catch_up_after_grant())

    async def _catch_up_after_grant(self) -> None:
        topic = await self.runtime.topic_view(self.slug, self.user, self.principal, fresh=True)
        if topic is None or not topic.rights.consume:
            self.runtime.hub.unsubscribe(self.slug, self)
            self._forbid()
            return
        await self._catch_up(topic, first_time=True)

    def _join(self) -> None:
        """Take live messages from now on, held back until the replay is sent."""
        self._hold([])
        self.runtime.hub.subscribe(self.slug, self)

    def _hold(self, items: list[Delivered] | None) -> None:
        """Hold ``items`` back (None: hold nothing, deliver live messages as they come)."""
        self.buffer = items
        self.held_bytes = sum(frame_size(item.text) for item in items or ())

    async def _catch_up(self, topic: TopicView, *, first_time: bool) -> None:
        """Send what the database has beyond ``last_sequence``, then what arrived meanwhile."""
        try:
            await self._catch_up_rounds(topic, first_time=first_time)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Left as it is, the connection would hold live messages back for ever: close it,
            # and the client's reconnect replays from the database.
            # An outage (a full disk, the database unreachable) is "try again later", not a defect.
            code = CLOSE_INTERNAL_ERROR
            found = outage(exc)
            if found is not None:
                logger.warning("catch-up on %s failed, %s; closing the connection: %s", self.slug, found.value, exc)
                code = CLOSE_TRY_AGAIN_LATER
            else:
                logger.exception("catch-up on %s failed; closing the connection", self.slug)
            self.runtime.hub.unsubscribe(self.slug, self)
            self.close(code)

    async def _catch_up_rounds(self, topic: TopicView, *, first_time: bool) -> None:
        self.topic = topic
        if first_time and topic.is_response_topic:
            await database_sync_to_async(services.cancel_collection)(topic.id)
        if first_time:
            await self.runtime.backplane.joined(self.slug)
        # A shared subscription's backlog and probe go to its first connection only.
        lead = not (self.shared and self.runtime.hub.has_shared_peer(self.slug, self))
        replayed = 0
        for round_ in range(CATCH_UP_ROUNDS):
            if lead:
                replayed += await self._replay(topic, redelivery=first_time and round_ == 0)
            # What arrived meanwhile, in sequence order (processes publish concurrently); stop at
            # a gap and fetch again, or a message still on its way would later count as sent.
            held = sorted(self.buffer or [], key=lambda item: item.sequence or 0)
            self._hold(None)
            for index, item in enumerate(held):
                if lead and not self.shared and has_gap(self.last_sequence, item.sequence):
                    self._hold(held[index:])
                    break
                self._deliver(item)
            if self.buffer is None:
                break
        else:
            held = self.buffer or []
            self._hold(None)
            for item in held:  # the resync loop looks for what is still missing
                self._deliver(item)
        if first_time and lead and not replayed and topic.supports_dasf and not topic.is_response_topic:
            self._deliver(probe("api_info"))
        if first_time and pings_on_attach(supports_dasf=topic.supports_dasf, is_response_topic=topic.is_response_topic):
            self.runtime.request_attach_ping(self.slug, topic.id)

    async def _replay(self, topic: TopicView, *, redelivery: bool) -> int:
        count = sent_bytes = 0
        outbound = self.outbound
        assert outbound is not None
        # Pages no larger than half the send queue, in frames and (at the frame sizes seen so far)
        # in bytes, fetched only when they fit; each frame waits for room in bytes too: a replay
        # must neither overflow the queue of a consumer that is reading nor hold much at once.
        most = max(1, min(REPLAY_PAGE, settings.SEND_QUEUE_FRAMES // 2))
        budget = settings.SEND_QUEUE_BYTES // 2
        limit = replay_page_size(most, budget, None)
        if redelivery:
            await self.runtime.writer.flush()  # acks this principal just sent on another connection
        while not self.closing:
            await outbound.wait_room(limit)
            if self.closing:
                break
            page = await self.runtime.replays.read(ReplayRequest(
                topic.id, topic.policy, self.principal, after=self.last_sequence, limit=limit, redelivery=redelivery,
            ))
            for replay in page.replays:
                # The stored frame is what live consumers got; a reconnect adds only the count.
                text = replay.frame
                if redelivery:
                    text = codec.dumps({**codec.loads(text), "redeliveryCount": replay.redelivery_count})
                elif self.path_shape is PathShape.PULSAR:  # a repair: first deliveries, count 0
                    text = Delivered(text, replay.message_id, replay.sequence).first_delivery_text()
                size = frame_size(text)
                await outbound.wait_room(1, size)
                if self.closing:
                    return count
                self._remember(replay.message_id, stored=True)
                self.last_sequence = replay.sequence
                self.push(text)
                count += 1
                sent_bytes += size
            if len(page.replays) < limit:
                self.last_sequence = max(self.last_sequence, page.last_sequence)
                break
            limit = replay_page_size(most, budget, sent_bytes // count)
        return count

    def _repair(self, item: Delivered | None = None) -> None:
        """Fetch what the fast path lost from the database; hold live messages until then."""
        if self.buffer is not None or self.topic is None or self.closing:
            if item is not None and self.buffer is not None:
                self.buffer.append(item)
                self.held_bytes += frame_size(item.text)
            return
        self._hold([] if item is None else [item])
        self.spawn(self._catch_up(self.topic, first_time=False))

    # --- delivery -------------------------------------------------------------------------

    def offer(self, item: Delivered) -> None:
        if self.buffer is not None:
            size = frame_size(item.text)
            if len(self.buffer) >= settings.SEND_QUEUE_FRAMES or (
                self.held_bytes and self.held_bytes + size > settings.SEND_QUEUE_BYTES
            ):
                self.too_slow(f"{len(self.buffer)} live messages ({self.held_bytes} bytes) held back during a replay")
                return
            self.buffer.append(item)
            self.held_bytes += size
        elif not self.shared and has_gap(self.last_sequence, item.sequence):
            self._repair(item)
        else:
            self._deliver(item)

    def _deliver(self, item: Delivered) -> None:
        if is_duplicate(self.last_sequence, item.sequence):
            return  # already sent by a replay or a repair
        if item.sequence is not None:
            self.last_sequence = item.sequence
        self._remember(item.message_id, stored=item.sequence is not None)
        # The Pulsar paths carry redeliveryCount on every delivery (architecture 18.4); the DASF
        # paths get the shared text byte for byte.
        self.push(item.first_delivery_text() if self.path_shape is PathShape.PULSAR else item.text)

    def _remember(self, message_id: str, *, stored: bool) -> None:
        unacked = self.unacked
        unacked[message_id] = stored
        if len(unacked) > self.runtime.unacked_limit:
            # Forget the oldest: a consumer that never acks must not grow without bound. Its
            # late ack is then refused, and the message is redelivered on reconnect.
            del unacked[next(iter(unacked))]

    def resync(self, database_last: int) -> None:
        """Called every resync interval with the topic's last sequence in the database."""
        if self.shared or self.topic is None or not self.topic.policy.stores:
            return
        if database_last <= self.last_sequence:
            self.behind = None
        elif needs_resync(self.last_sequence, database_last, self.behind):
            self.behind = None
            self._repair()
        else:
            self.behind = database_last

    # --- rights ---------------------------------------------------------------------------

    def recheck_rights(self) -> None:
        if not self.closing:
            self.spawn(self._recheck_rights())

    async def _recheck_rights(self) -> None:
        topic, read = await self.reread_topic(self.slug)
        if not read:
            self._revoked_quietly()
            self.close(CLOSE_INTERNAL_ERROR)
            return
        if self.closing:
            return  # refused meanwhile (one change is often announced several times)
        attached = self.topic is not None or self.buffer is not None
        if topic is None:
            if attached:  # deleted under us: as if revoked
                self._revoked()
            return  # still waiting for it to be created
        if not topic.rights.consume:
            if attached:
                self._revoked()
            # Not attached: the topic was created, but not (yet) for us; a grant that follows (an
            # admin creating a topic, then granting) attaches this connection.
            return
        if attached:
            self.topic = topic
        else:
            self.runtime.hub.unwait(self.slug, self)
            self._join()
            await self._catch_up(topic, first_time=True)

    def _revoked(self) -> None:
        """Nothing more goes out, not even what was queued, and acks stop counting."""
        self._revoked_quietly()
        self._forbid()

    def _revoked_quietly(self) -> None:
        self.runtime.hub.unsubscribe(self.slug, self)
        self.topic = None
        self._hold(None)
        if self.outbound is not None:
            self.outbound.discard()

    # --- acks -----------------------------------------------------------------------------

    async def on_frame(self, raw: dict[str, Any]) -> None:
        if "type" in raw:
            if raw["type"] == "isEndOfTopic" and self.path_shape is PathShape.PULSAR:
                # Answered for every topic on the Pulsar paths, DASF ones too (architecture 18.1).
                self.push_model(EndOfTopicFrame(endOfTopic=False))
                return
            # A control frame (Pulsar's negativeAcknowledge, permit, unsubscribe, ...): never an
            # ack, whatever else it carries; a nacked message stays outstanding.
            self.refuse_control_frame(raw, "; only acks are read here")
            return
        ack = self.read_ack(raw)
        if ack is None:
            return
        stored = self.unacked.pop(ack.messageId, None)
        if stored is None:
            self.refuse(f"unknown messageId {ack.messageId[:64]}", raw)
            return
        if stored and self.topic is not None:
            self.runtime.writer.submit(
                Ack(self.topic.id, self.topic.policy, uuid.UUID(ack.messageId), self.principal)
            )
