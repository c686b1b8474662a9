"""DASF request / reply, as the ``demessaging`` package speaks it: ``request`` is a DASF client call,
``serve`` a DASF backend module for an async handler. Both use Pulsar's websocket paths, as
``demessaging``'s ``PulsarConfig`` does, so they work with its modules and clients either way.

A request goes to the topic with ``properties`` naming a response topic (``<topic>_<8 letters>``) and
a request context; the module answers there with ``messageType`` ``progress`` (any number) and one
``response`` (``status`` success or error; its payload the base64 of the result's JSON, possibly cut
into ``fragment`` / ``num_fragments`` pieces of that base64 text). The broker pings a module's topic
(``messageType`` ``ping``, answered with ``pong``) and asks for its API (``api_info``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import string
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from switchyard_client import codec
from switchyard_client.errors import RequestError, RequestTimeout, SwitchyardError
from switchyard_client.message import Message
from switchyard_client.producer import Outgoing

if TYPE_CHECKING:
    from switchyard_client.client import Client
    from switchyard_client.producer import Producer

logger = logging.getLogger("switchyard_client")

Handler = Callable[[Any], Awaitable[Any]]
# A module's reply producers, one per response topic, kept for the next reply to the same requester.
REPLY_PRODUCERS = 64
# demessaging's default max_payload_size: a larger response goes in fragments.
MAX_PAYLOAD_BYTES = 500 * 1024


def response_topic_for(topic: str) -> str:
    """What ``demessaging`` names a request's response topic: the topic, ``_`` and 8 ASCII letters."""
    return f"{topic}_{''.join(random.choices(string.ascii_letters, k=8))}"


async def request(client: Client, topic: str, call: Any, *, timeout: float = 60.0,
                  on_progress: Callable[[Any], None] | None = None) -> Any:
    """Send ``call`` (the JSON a module's functions take, e.g. ``{"func_name": "add", "a": 2}``) to the
    module on ``topic`` and return its result, decoded from JSON. Raises ``RequestError`` when the module
    answered with an error, ``RequestTimeout`` when no response came within ``timeout``."""
    response_topic = response_topic_for(topic)
    consumer = client.subscribe(response_topic, f"python-backend-{datetime.now().isoformat()}")
    producer: Producer | None = None
    try:
        async with asyncio.timeout(timeout):
            await consumer.start()
            producer = await client.producer(topic)
            await producer.send(codec.to_json_bytes(call), properties={
                "response_topic": response_topic, "requestContext": 0, "messageType": "request"})
            return await _response(consumer, on_progress)
    except TimeoutError:
        raise RequestTimeout(f"{topic}: no response within {timeout} s") from None
    finally:
        await consumer.close()
        if producer is not None:
            await producer.close()


async def _response(consumer: Any, on_progress: Callable[[Any], None] | None) -> Any:
    fragments: dict[int, str] = {}
    while True:
        message: Message = await consumer.receive()
        await message.ack()
        kind = message.properties.get("messageType")
        if kind == "progress":
            if on_progress is not None:
                on_progress(_json_or_text(message.data))
            continue
        if kind != "response":
            continue
        raw = message.frame.get("payload")
        text = raw if isinstance(raw, str) else ""
        count = _int(message.properties.get("num_fragments"))
        if count is not None and count > 1:
            fragments[_int(message.properties.get("fragment")) or 0] = text
            if len(fragments) < count:
                continue
            text = "".join(fragments[i] for i in sorted(fragments))
        data = _b64(text)
        if message.properties.get("status") == "error":
            raise RequestError(data.decode(errors="replace"))
        for name in ("api_info", "info"):
            if name in message.properties:
                return _json_or_text(str(message.properties[name]).encode())
        return _json_or_text(data)


async def serve(client: Client, topic: str, handler: Handler, *, api_info: dict[str, Any] | None = None,
                concurrency: int = 8) -> None:
    """Answer DASF requests on ``topic`` with ``handler`` until cancelled: ``handler`` gets the request's
    JSON and returns what the response carries as JSON; an exception is answered as an error. At most
    ``concurrency`` requests run at once (further ones wait in the broker, unacked)."""
    module = _Module(client, topic, handler, api_info, concurrency)
    try:
        await module.run()
    finally:
        await module.close()


class _Module:
    def __init__(self, client: Client, topic: str, handler: Handler, api_info: dict[str, Any] | None,
                 concurrency: int) -> None:
        self.client = client
        self.topic = topic
        self.handler = handler
        self.api_info = api_info or {"classes": [], "functions": [], "rpc_schema": {}}
        self.slots = asyncio.Semaphore(concurrency)
        self.running: set[asyncio.Task[None]] = set()
        self.replies: OrderedDict[str, Producer] = OrderedDict()
        self.consumer = client.subscribe(topic, f"backend-module-{datetime.now().isoformat()[:19]}",
                                         receiver_queue_size=max(concurrency, 1))

    async def run(self) -> None:
        async for message in self.consumer:
            await self.slots.acquire()
            task = asyncio.create_task(self._handle(message))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def close(self) -> None:
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
        await self.consumer.close()
        while self.replies:
            _, producer = self.replies.popitem()
            await producer.close()

    async def _handle(self, message: Message) -> None:
        try:
            # As demessaging's modules do: the ack first, so a request that crashes the module is not
            # given to it again and again.
            await message.ack()
            await self._answer(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: answering message %s failed", self.topic, message.id)
        finally:
            self.slots.release()

    async def _answer(self, message: Message) -> None:
        props = message.properties
        reply_to, kind = props.get("response_topic"), props.get("messageType")
        context = props.get("requestContext", message.frame.get("requestContext"))
        if not isinstance(reply_to, str) or not reply_to or not isinstance(kind, str) or context is None:
            logger.warning("%s: not a DASF request, ignored: %s", self.topic, message.id)
            return
        extra: dict[str, Any] = {}
        payload = b""
        if kind == "ping":
            kind = "pong"
        elif kind == "api_info":
            kind, extra = "response", {"api_info": codec.dumps(self.api_info)}
        elif kind == "info":
            kind, extra = "response", {"info": codec.dumps({})}
        elif kind == "request":
            try:
                result = await self.handler(_json_or_text(message.data))
                payload, extra = codec.to_json_bytes(result), {"status": "success"}
            except asyncio.CancelledError:
                raise
            except Exception as error:
                payload, extra = f"error executing request: {error}".encode(), {"status": "error"}
            kind = "response"
        else:
            return
        properties = {**extra, "requestContext": str(context), "messageType": kind, "source_topic": self.topic}
        producer = await self._producer(reply_to)
        await producer.send_many(fragments(payload, properties))

    async def _producer(self, topic: str) -> Producer:
        producer = self.replies.pop(topic, None)
        if producer is None:
            producer = await self.client.producer(topic)
        self.replies[topic] = producer
        while len(self.replies) > REPLY_PRODUCERS:
            _, oldest = self.replies.popitem(last=False)
            with contextlib.suppress(SwitchyardError):
                await oldest.close()
        return producer


def fragments(payload: bytes, properties: dict[str, Any]) -> list[Outgoing]:
    """A response as ``demessaging``'s modules send it: in one message, or, above its default
    ``max_payload_size``, as pieces of its base64 text (each under a broker's usual 1 MiB frame limit),
    numbered in ``fragment`` / ``num_fragments``."""
    if len(payload) <= MAX_PAYLOAD_BYTES:
        return [Outgoing(payload, properties)]
    text = base64.b64encode(payload)
    pieces = [text[start:start + MAX_PAYLOAD_BYTES] for start in range(0, len(text), MAX_PAYLOAD_BYTES)]
    # A piece's length is a multiple of 4, so its bytes are sent as exactly that base64 text.
    return [Outgoing(base64.b64decode(piece), {**properties, "fragment": index, "num_fragments": len(pieces)})
            for index, piece in enumerate(pieces)]


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def _json_or_text(data: bytes) -> Any:
    if not data:
        return None
    try:
        return codec.loads(data)
    except codec.DecodeError:
        return data.decode(errors="replace")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
