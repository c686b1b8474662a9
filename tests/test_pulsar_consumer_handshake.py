"""A Pulsar consumer's handshake while a revocation or an eviction arrives (consumers/pulsar_consumer.py,
consumers/base.py): driven in process through the ASGI interface, since from outside a server the
moment (while the subscription is joined) is too short to hit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from app.broker.topics import TopicView
from app.pulsar.params import ConsumerParams
from consumers.base import CLOSE_FORBIDDEN
from consumers.pulsar_consumer import PulsarConsumer


class Handshaking(PulsarConsumer):
    """Its handshake runs ``during`` (what arrives meanwhile) and would accept; its topic is gone."""

    def __init__(self, during: Callable[[PulsarConsumer], None]) -> None:
        super().__init__()
        self.during = during

    async def before_accept(self) -> None:
        self.slug, self.subscription = "t", "s"
        self.params = ConsumerParams.model_validate({})
        self.during(self)
        await asyncio.gather(*self.tasks, return_exceptions=True)  # what that started has run
        return None

    async def reread_topic(self, slug: str) -> tuple[TopicView | None, bool]:
        return None, True


async def handshake(consumer: PulsarConsumer) -> list[dict[str, Any]]:
    """What the server sends on a handshake, until it refuses or closes (or 2 s pass)."""
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()
    inbox = [{"type": "websocket.connect"}]

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)
        if event["type"] in ("websocket.close", "websocket.http.response.body"):
            done.set()

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop()
        try:
            await asyncio.wait_for(done.wait(), 2)
        except TimeoutError:
            pass
        return {"type": "websocket.disconnect", "code": 1000}

    await asyncio.wait_for(consumer({"type": "websocket", "query_string": b""}, receive, send), 10)
    return sent


async def test_eviction_during_the_handshake_refuses_it() -> None:
    """A consumer evicted while its handshake is pending is answered 503, not accepted."""
    sent = await handshake(Handshaking(lambda consumer: consumer.evict("reconnect")))
    assert [event["type"] for event in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 503


async def test_revocation_during_the_handshake_closes_once_accepted() -> None:
    """Rights revoked while the handshake is pending are looked at once accepted: error frame, 4403."""
    sent = await handshake(Handshaking(lambda consumer: consumer.recheck_rights()))
    assert [event["type"] for event in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert "was deleted" in sent[1]["text"] and sent[2]["code"] == CLOSE_FORBIDDEN
