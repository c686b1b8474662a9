"""The backplane: carries deliveries and control messages to the other server processes.

Each process has one channel-layer channel and joins the group ``topic.<slug>`` while it has local
connections on that topic, plus the ``broker.control`` group. One sender task publishes in
submission order. The layer may drop messages (channels_redis drops on a full channel, pub/sub
loses what is sent while Redis is away), so it is never the only record of a stored message: each
connection repairs gaps in the per-topic sequence from the database, and the resync loop catches
up topics whose database sequence ran ahead of what this process saw.

With the in-memory layer (one process) there is nobody to tell, and ``LocalBackplane`` does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from app.broker.hub import Delivered
from app.outages import OutageLog

logger = logging.getLogger(__name__)

CONTROL_GROUP = "broker.control"
JOIN_TIMEOUT_S = 2.0
# Messages waiting for Redis; beyond this (or BACKPLANE_QUEUE_BYTES of deliveries) the oldest are
# dropped (and repaired from the database).
OUTBOX_LIMIT = 10_000
BATCH_MESSAGES = 256
# Most delivery bytes in one PUBLISH (a single larger message goes alone): the batch is encoded
# whole, and Redis drops a subscriber whose pub/sub output buffer passes 32 MiB (its default).
BATCH_BYTES = 1024 * 1024


def topic_group(slug: str) -> str:
    return f"topic.{slug}"


def _timestamp(when: datetime | None) -> float | None:
    # The layer's encoding (msgpack) carries no datetimes.
    return None if when is None else when.timestamp()


def _datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


class Receiver:
    """What the backplane hands incoming messages to (the runtime)."""

    def remote_delivery(self, slug: str, item: Delivered) -> None: ...

    def remote_grant(self, slug: str, principal: str) -> None: ...

    def remote_rights_changed(self, slug: str, *, exists: bool = True, response: bool = False) -> None: ...

    def remote_credentials_revoked(self, token_id: int | None, principal: str | None) -> None: ...

    def remote_work_runnable(self) -> None: ...

    def remote_work_aborted(self, request_id: int, worker_id: int) -> None: ...

    def remote_worker_connected(self, worker_id: int, connected_at: float) -> None: ...


class LocalBackplane:
    """One process: nothing to carry."""

    origin = "local"

    async def start(self, receiver: Receiver) -> None:
        return None

    async def stop(self) -> None:
        return None

    def join(self, slug: str) -> None:
        return None

    def leave(self, slug: str) -> None:
        return None

    async def joined(self, slug: str) -> None:
        """Return once messages for ``slug`` from other processes reach this one."""
        return None

    def deliver(self, slug: str, item: Delivered) -> None:
        return None

    def grant(self, slug: str, principal: str) -> None:
        return None

    def rights_changed(self, slug: str, *, exists: bool = True, response: bool = False) -> None:
        return None

    def credentials_revoked(self, token_id: int | None, principal: str | None) -> None:
        return None

    # Worker notices (app/work/fleet.py).

    def work_runnable(self) -> None:
        return None

    def work_aborted(self, request_id: int, worker_id: int) -> None:
        return None

    def worker_connected(self, worker_id: int, connected_at: float) -> None:
        return None


class LayerBackplane(LocalBackplane):
    """Several processes behind one channel layer (Redis)."""

    def __init__(self, layer: Any, limit_bytes: int = sys.maxsize) -> None:
        self.layer = layer
        self.origin = uuid.uuid4().hex
        self.channel = ""
        # (group, message, bytes of its delivery text): unsent, oldest first.
        self._outbox: deque[tuple[str, dict[str, Any], int]] = deque()
        self.queued_bytes = 0
        self.limit_bytes = limit_bytes
        self._groups_wanted: set[str] = {CONTROL_GROUP}
        self._groups_joined: set[str] = set()
        self._wakeup = asyncio.Event()
        self._membership = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0
        self.received = 0
        self.dropped = 0

    async def start(self, receiver: Receiver) -> None:
        self.channel = await self.layer.new_channel("switchyard.")
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="backplane-send"),
            asyncio.create_task(self._receive_loop(receiver), name="backplane-receive"),
        ]
        self._wakeup.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []

    # --- membership and outgoing messages (all synchronous; the sender task does the I/O) ---

    def join(self, slug: str) -> None:
        self._groups_wanted.add(topic_group(slug))
        self._wakeup.set()

    def leave(self, slug: str) -> None:
        self._groups_wanted.discard(topic_group(slug))
        self._wakeup.set()

    async def joined(self, slug: str) -> None:
        # A consumer replays from the database only after joining, so nothing published in
        # between is missed; if Redis is away, the resync loop covers the wait we give up on.
        group = topic_group(slug)
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S), self._membership:
                await self._membership.wait_for(lambda: group in self._groups_joined)
        except TimeoutError:
            logger.warning("joining %s took over %.0f s; relying on resync", group, JOIN_TIMEOUT_S)

    def deliver(self, slug: str, item: Delivered) -> None:
        self._send(topic_group(slug), {"type": "broker.deliver", "slug": slug, "text": item.text,
                                       "message_id": item.message_id, "sequence": item.sequence,
                                       "deliver_at": _timestamp(item.deliver_at)},
                   sys.getsizeof(item.text))

    def grant(self, slug: str, principal: str) -> None:
        self._send(CONTROL_GROUP, {"type": "broker.grant", "slug": slug, "principal": principal})

    def rights_changed(self, slug: str, *, exists: bool = True, response: bool = False) -> None:
        self._send(CONTROL_GROUP, {"type": "broker.rights", "slug": slug, "exists": exists, "response": response})

    def credentials_revoked(self, token_id: int | None, principal: str | None) -> None:
        self._send(CONTROL_GROUP, {"type": "broker.revoked", "token_id": token_id, "principal": principal})

    def work_runnable(self) -> None:
        self._send(CONTROL_GROUP, {"type": "work.runnable"})

    def work_aborted(self, request_id: int, worker_id: int) -> None:
        self._send(CONTROL_GROUP, {"type": "work.aborted", "request_id": request_id, "worker_id": worker_id})

    def worker_connected(self, worker_id: int, connected_at: float) -> None:
        self._send(CONTROL_GROUP, {"type": "work.connected", "worker_id": worker_id, "connected_at": connected_at})

    def _send(self, group: str, message: dict[str, Any], size: int = 0) -> None:
        message["origin"] = self.origin
        self._outbox.append((group, message, size))
        self.queued_bytes += size
        self._trim()
        self._wakeup.set()

    def _trim(self) -> None:
        """Redis is slower than we publish (or away): drop the oldest beyond the bounds (the newest
        message always stays). Stored messages are repaired from the database; a dropped control
        message is repeated by the next change."""
        while len(self._outbox) > 1 and (len(self._outbox) > OUTBOX_LIMIT or self.queued_bytes > self.limit_bytes):
            self.queued_bytes -= self._outbox.popleft()[2]
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("backplane backlog full: %d messages dropped so far", self.dropped)

    async def _send_loop(self) -> None:
        outages = OutageLog(logger, "backplane send")
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._sync_groups()
                while self._outbox:
                    # Taken out while it is sent, so the trimming of newer ones cannot drop it.
                    batch = self._next_batch()
                    try:
                        await self.layer.group_send(*self._publication(batch))
                    except BaseException:
                        self._outbox.extendleft(reversed(batch))
                        self.queued_bytes += sum(size for _, _, size in batch)
                        self._trim()
                        raise
                    self.sent += len(batch)
                outages.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis is away: keep what is unsent (bounded) and retry; stored messages are
                # also repaired from the database, so dropping the oldest is safe.
                outages.failed(exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**outages.failures))
                self._wakeup.set()

    def _next_batch(self) -> list[tuple[str, dict[str, Any], int]]:
        """Take the oldest queued message and the consecutive ones for the same group, up to
        BATCH_MESSAGES and BATCH_BYTES: one PUBLISH per batch, or Redis round trips would cap what
        crosses processes."""
        first = self._outbox.popleft()
        batch, total = [first], first[2]
        while self._outbox and len(batch) < BATCH_MESSAGES:
            group, _, size = self._outbox[0]
            if group != first[0] or total + size > BATCH_BYTES:
                break
            batch.append(self._outbox.popleft())
            total += size
        self.queued_bytes -= total
        return batch

    def _publication(self, batch: list[tuple[str, dict[str, Any], int]]) -> tuple[str, dict[str, Any]]:
        """The group and the message that carry ``batch``."""
        if len(batch) == 1:
            return batch[0][0], batch[0][1]
        return batch[0][0], {"type": "broker.batch", "messages": [m for _, m, _ in batch], "origin": self.origin}

    async def _sync_groups(self) -> None:
        added = False
        for group in self._groups_wanted - self._groups_joined:
            await self.layer.group_add(group, self.channel)
            self._groups_joined.add(group)
            added = True
        for group in self._groups_joined - self._groups_wanted:
            await self.layer.group_discard(group, self.channel)
            self._groups_joined.discard(group)
        if added:
            async with self._membership:
                self._membership.notify_all()

    async def _receive_loop(self, receiver: Receiver) -> None:
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "broker.deliver": lambda m: receiver.remote_delivery(
                m["slug"], Delivered(m["text"], m["message_id"], m["sequence"], _datetime(m.get("deliver_at")))
            ),
            "broker.grant": lambda m: receiver.remote_grant(m["slug"], m["principal"]),
            "broker.rights": lambda m: receiver.remote_rights_changed(
                m["slug"], exists=m.get("exists", True), response=m.get("response", False)
            ),
            "broker.revoked": lambda m: receiver.remote_credentials_revoked(m["token_id"], m["principal"]),
            "work.runnable": lambda m: receiver.remote_work_runnable(),
            "work.aborted": lambda m: receiver.remote_work_aborted(m["request_id"], m["worker_id"]),
            "work.connected": lambda m: receiver.remote_worker_connected(m["worker_id"], m["connected_at"]),
        }
        outages = OutageLog(logger, "backplane receive")
        while True:
            try:
                message = await self.layer.receive(self.channel)
                outages.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outages.failed(exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**outages.failures))
                continue
            if message.get("origin") == self.origin:
                continue
            batch = message["messages"] if message.get("type") == "broker.batch" else [message]
            for item in batch:
                self.received += 1
                handler = handlers.get(item.get("type", ""))
                if handler is None:
                    logger.warning("unknown backplane message %r", item.get("type"))
                    continue
                try:
                    handler(item)
                except Exception:
                    logger.exception("backplane message %s failed", item.get("type"))


def make_backplane() -> LocalBackplane:
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return LocalBackplane()
    return LayerBackplane(layer, settings.BACKPLANE_QUEUE_BYTES)
