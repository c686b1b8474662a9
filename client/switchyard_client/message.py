"""A delivered message, as consumers and readers hand it to the application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from switchyard_client import codec


@dataclass(eq=False)
class Message:
    id: str
    data: bytes
    properties: dict[str, Any]
    key: str | None
    publish_time: datetime | None
    redelivery_count: int
    # The delivery frame as received: DASF fields (``context``, fragments) and anything a producer added.
    frame: dict[str, Any]
    _ack: Callable[[Message], Awaitable[None]] = field(repr=False)
    _nack: Callable[[Message], Awaitable[None]] = field(repr=False)

    @classmethod
    def of(cls, frame: dict[str, Any], ack: Callable[[Message], Awaitable[None]],
           nack: Callable[[Message], Awaitable[None]]) -> Message:
        """A delivery with a string ``messageId``; any other field of an unexpected type is read as
        missing. An exception here would drop the connection, and the broker would send the same frame
        again on the next one, for ever."""
        payload, properties, key = frame.get("payload"), frame.get("properties"), frame.get("key")
        published, count = frame.get("publishTime"), frame.get("redeliveryCount")
        return cls(
            id=frame["messageId"],
            data=codec.decode_payload(payload if isinstance(payload, str) else None),
            properties=properties if isinstance(properties, dict) else {},
            key=key if isinstance(key, str) else None,
            publish_time=_time(published) if isinstance(published, str) else None,
            redelivery_count=count if type(count) is int and count >= 0 else 0,
            frame=frame,
            _ack=ack,
            _nack=nack,
        )

    @property
    def text(self) -> str:
        return self.data.decode()

    def json(self) -> Any:
        return codec.loads(self.data)

    async def ack(self) -> None:
        """Acknowledge it: the subscription will not deliver it again."""
        await self._ack(self)

    async def nack(self) -> None:
        """Give it back: the broker redelivers it after the subscription's negative-ack delay."""
        await self._nack(self)


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
