"""Redis Streams: one ``XADD`` per event, one field per attribute, ``data`` as a field of its own;
streams are capped with ``MAXLEN ~`` so an unread stream cannot fill Redis.

Stream: the event's destination, else ``OUTBOX_REDIS_STREAM``. Readers use ``XREAD`` or consumer
groups (``XREADGROUP``) as they like; entry ids are Redis's own.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from app.outbox.cloudevents import Outbound
from app.outbox.targets import PublishRejected, TargetUnavailable

logger = logging.getLogger(__name__)

# Replies that say the event itself cannot go where it is sent; anything else is Redis's state.
REFUSALS = ("WRONGTYPE", "ERR The ID specified", "ERR Invalid stream ID")


async def ping(url: str, timeout_s: float) -> None:
    """PING the Redis at ``url`` (``/readyz``: the outbox target, and the channel layer's Redis);
    raises when it cannot be reached."""
    client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        await client.ping()
    finally:
        await client.aclose()


def stream_fields(event: Outbound) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = dict(event.string_attributes())
    if event.data is not None:
        fields["data"] = event.data
    return fields


class RedisStreamsTarget:
    name = "redis"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or settings.OUTBOX_REDIS_URL
        self._client: aioredis.Redis | None = None

    async def connect(self) -> None:
        if not self.url:
            raise TargetUnavailable("neither OUTBOX_REDIS_URL nor REDIS_URL is set")
        client = aioredis.Redis.from_url(
            self.url, socket_timeout=settings.OUTBOX_PUBLISH_TIMEOUT_S, socket_connect_timeout=10
        )
        try:
            await client.ping()
        except RedisError as exc:
            await client.aclose()
            raise TargetUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc
        self._client = client

    async def publish(self, event: Outbound) -> None:
        if self._client is None:
            raise TargetUnavailable("Redis is not connected")
        try:
            await self._client.xadd(
                event.destination or settings.OUTBOX_REDIS_STREAM, stream_fields(event),  # type: ignore[arg-type]
                maxlen=settings.OUTBOX_REDIS_MAXLEN, approximate=True,
            )
        except RedisError as exc:
            if str(exc).startswith(REFUSALS):  # this event's stream is unusable
                raise PublishRejected(f"Redis refused the event: {type(exc).__name__}: {exc}") from exc
            # Connection loss, OOM, READONLY during a failover, LOADING, TRYAGAIN, ...: Redis's state.
            raise TargetUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise TargetUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:
                logger.debug("closing the Redis client failed", exc_info=True)
