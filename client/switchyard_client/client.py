"""``Client``: one server, one principal; makes producers, consumers, readers and HTTP calls, and
closes all of them when it closes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from switchyard_client import dasf, http
from switchyard_client.addresses import Server, TopicName
from switchyard_client.consumer import SUBSCRIPTION_TYPES, Consumer, Reader, SubscriptionType
from switchyard_client.errors import ClientClosed
from switchyard_client.link import Dialer
from switchyard_client.producer import Producer
from switchyard_client.status import StatusWatch


class _Closeable(Protocol):
    @property
    def closed(self) -> bool: ...

    async def close(self) -> None: ...


class Client:
    """``async with Client("ws://127.0.0.1:8000", token=...) as client: ...``

    ``url`` is the server's base URL (``ws://``, ``wss://``, ``http://`` or ``https://``, with a path prefix
    when it is behind a proxy); ``token`` an API token (sent as ``Authorization: Token <token>``), or None
    for anonymous access. Any Pulsar-websocket-compatible broker serves producers, consumers and readers.
    """

    def __init__(self, url: str, *, token: str | None = None, connect_timeout_s: float = 30.0,
                 send_timeout_s: float = 30.0, max_frame_bytes: int | None = 2**24,
                 backoff_initial_s: float = 0.1, backoff_maximum_s: float = 10.0) -> None:
        self.server = Server.parse(url)
        self.headers = {"Authorization": f"Token {token}"} if token else {}
        self.send_timeout_s = send_timeout_s
        self.dialer = Dialer(self.headers, connect_timeout_s, max_frame_bytes, backoff_initial_s, backoff_maximum_s)
        self._open: list[_Closeable] = []
        self._closed = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every socket made through this client (pending sends fail with ``ClientClosed``); the
        client makes none after."""
        self._closed = True
        # Together: each may wait for its closing handshake (a hung server's, up to the link's close timeout).
        closing, self._open = self._open, []
        await asyncio.gather(*(thing.close() for thing in closing), return_exceptions=True)

    def _owned(self, thing: Any) -> Any:
        if self._closed:
            # A socket made now would outlive the close that was to end them all.
            raise ClientClosed(f"{self.server.ws}: the client is closed")
        # Sockets closed by their owner are dropped here, so a long-lived client does not keep them.
        self._open = [other for other in self._open if not other.closed]
        self._open.append(thing)
        return thing

    async def producer(self, topic: str, *, name: str | None = None, send_timeout_s: float | None = None) -> Producer:
        """A connected producer. ``name`` is Pulsar's ``producerName`` (unique among the topic's live
        producers). Raises ``ConnectionRefused`` when the broker refuses it for good."""
        params = {"producerName": name} if name else None
        url = self.server.pulsar("producer", TopicName.parse(topic), params=params)
        producer: Producer = self._owned(Producer(self.dialer, url, topic, send_timeout_s or self.send_timeout_s))
        return await producer.start()

    def subscribe(self, topic: str, subscription: str, *, type: SubscriptionType = "exclusive",
                  receiver_queue_size: int = 1000, pull: bool = False, ack_timeout_s: float | None = None,
                  nack_delay_s: float | None = None, max_redeliver_count: int | None = None,
                  dead_letter_topic: str | None = None, name: str | None = None) -> Consumer:
        """A consumer of the durable subscription ``subscription``: ``async for message in ...``, then
        ``await message.ack()``. Its socket opens on the first message asked for."""
        if type not in SUBSCRIPTION_TYPES:
            raise ValueError(f"type: one of {', '.join(SUBSCRIPTION_TYPES)}")
        params = {"subscriptionType": SUBSCRIPTION_TYPES[type], "receiverQueueSize": str(receiver_queue_size)}
        if pull:
            params["pullMode"] = "true"
        optional = {"ackTimeoutMillis": _ms(ack_timeout_s), "negativeAckRedeliveryDelay": _ms(nack_delay_s),
                    "maxRedeliverCount": max_redeliver_count, "deadLetterTopic": dead_letter_topic,
                    "consumerName": name}
        params.update({key: str(value) for key, value in optional.items() if value is not None})
        url = self.server.pulsar("consumer", TopicName.parse(topic), subscription, params)
        consumer: Consumer = self._owned(Consumer(self.dialer, url, topic, subscription, pull, receiver_queue_size))
        return consumer

    def reader(self, topic: str, *, start: str = "latest", receiver_queue_size: int = 1000) -> Reader:
        """Every message of ``topic`` from ``start`` on: ``"earliest"`` (what is stored first),
        ``"latest"`` (only what is published from now) or a message id (the messages after it)."""
        name = TopicName.parse(topic)

        def url_for(position: str) -> str:
            return self.server.pulsar("reader", name, params={"messageId": position,
                                                              "receiverQueueSize": str(receiver_queue_size)})

        reader: Reader = self._owned(Reader(self.dialer, url_for, topic, start, receiver_queue_size))
        return reader

    async def request(self, topic: str, call: Any, *, timeout: float = 60.0,
                      on_progress: Callable[[Any], None] | None = None) -> Any:
        """A DASF request to the backend module on ``topic`` (``call`` as its functions take it, e.g.
        ``{"func_name": "add", "a": 2, "b": 3}``); returns its result. ``RequestError`` when the module
        answered with an error, ``RequestTimeout`` after ``timeout``. Progress reports go to ``on_progress``."""
        return await dasf.request(self, topic, call, timeout=timeout, on_progress=on_progress)

    async def serve(self, topic: str, handler: Callable[[Any], Awaitable[Any]], *,
                    api_info: dict[str, Any] | None = None, concurrency: int = 8) -> None:
        """Be a DASF backend module on ``topic`` until cancelled: ``await handler(call)`` answers each
        request (an exception is answered as an error). ``demessaging`` clients can call it."""
        await dasf.serve(self, topic, handler, api_info=api_info, concurrency=concurrency)

    async def status(self, topic: str, *, timeout_s: float = 30.0) -> http.TopicStatus:
        """Whether ``topic``'s consumers answer pings (a DASF topic; others get ``HTTPError`` 400)."""
        _, body = await http.call("GET", self.server.api(f"topics/{quote(topic, safe='')}/status"), self.headers,
                                  timeout_s=timeout_s, ok=(200, 503))
        return http.TopicStatus.model_validate(body)

    def watch_status(self, topics: list[str] | None = None) -> StatusWatch:
        """Statuses as they change: ``async for change in client.watch_status([...])`` yields
        ``StatusFrame`` (a topic's status), ``StatusSyncedFrame`` (all visible topics were sent) and
        ``StatusGoneFrame`` (a topic was deleted or hidden). All visible topics when ``topics`` is None."""
        params = {"topics": ",".join(topics)} if topics else None
        watch: StatusWatch = self._owned(StatusWatch(self.dialer, self.server.websocket("ws/status", params)))
        return watch

    async def emit(self, type: str, source: str, data: Any = None, *, subject: str | None = None,
                   key: str | None = None, target: str | None = None, destination: str | None = None,
                   id: str | None = None, time: datetime | None = None, datacontenttype: str | None = None,
                   extensions: Mapping[str, Any] | None = None, timeout_s: float = 30.0) -> http.Event:
        """Record a CloudEvent in the outbox (``POST /api/v1/outbox/events``); the server's relay
        publishes it to ``target`` (its default target when None). Returns the stored event."""
        body: dict[str, Any] = {"type": type, "source": source, "data": data}
        optional = {"subject": subject, "key": key, "target": target, "destination": destination, "id": id,
                    "time": None if time is None else time.isoformat(), "datacontenttype": datacontenttype,
                    "extensions": dict(extensions) if extensions else None}
        body.update({name: value for name, value in optional.items() if value is not None})
        _, event = await http.call("POST", self.server.api("outbox/events"), self.headers, body, timeout_s=timeout_s)
        return http.Event.model_validate(event)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)
