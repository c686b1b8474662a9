"""The client side of the broker protocol as the load generator speaks it.

Frames are bytes from orjson, sent as text frames (``text=True``): no str round trip per message.
"""

from __future__ import annotations

import base64
import os
import random
import string
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

dumps = orjson.dumps
loads = orjson.loads


async def open_socket(url: str, open_timeout_s: float = 10.0) -> ClientConnection:
    """A client socket as the DASF client opens one: no compression (uvicorn does not offer it
    either), no proxy from the environment (loopback only), no client-side keepalive pings."""
    return await connect(
        url,
        compression=None,
        proxy=None,
        ping_interval=None,
        open_timeout=open_timeout_s,
        max_size=4 * 1024 * 1024,
        # Deep enough that a burst of deliveries is not throttled by the client's own reader.
        max_queue=1024,
    )


def producer_url(base: str, topic: str) -> str:
    return f"{base}{topic}"


def consumer_url(base: str, topic: str, subscription: str) -> str:
    return f"{base}{topic}/{subscription}"


def payload_of(size: int) -> str:
    """A base64 payload of exactly ``size`` characters (when size is a multiple of 4)."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()[:size]


def response_topic_for(topic: str) -> str:
    """The DASF client's response-topic name: the topic, an underscore and 8 random letters."""
    return f"{topic}_{''.join(random.choices(string.ascii_letters, k=8))}"


def ack_of(message_id: str) -> bytes:
    return dumps({"messageId": message_id})


def is_ok(ack: dict[str, Any]) -> bool:
    return ack.get("result") == "ok"
