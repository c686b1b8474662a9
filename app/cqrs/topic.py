"""Reading CQRS changes off a Switchyard topic (the replica consumer's topic source,
relays/cqrs_topic_consumer.py), as plain functions: no socket, no event loop.

A master publishing with the ``topic`` outbox target puts each change on the topic as a Pulsar
delivery whose ``payload`` is the base64 of a structured CloudEvent (app/outbox/targets/topics.py)
of type ``cqrs.<cqrs_id>.<save|delete|sync>``, data content type ``CONTENT_TYPE`` and data the
django-cqrs payload (app/cqrs/events.py). ``read_frame`` sorts what the server sends:

- a change of a replica model here: ``Change``, its payload for app/cqrs/apply.py ``receive``;
- ``Skip`` (acked, not applied): an event that is no CQRS change, a change of a ``cqrs_id`` no
  replica model here has, or a delivery holding no CloudEvent at all. A topic is shared: unlike a
  queue bound to this replica's ids, it carries other services' events and other replicas' models,
  and other clients' payloads in formats of their own, so they are normal traffic (DEBUG). Only a
  frame that is no delivery of the server's shape is a WARNING;
- ``Reject`` (dead-lettered, WARNING): a change of a replica model here that is malformed (another
  data content type, data that is no payload, a payload that contradicts its type). It was meant
  for this replica: its dead letter keeps it for whoever repairs it;
- ``Notice``: a frame that is no delivery (the server's error frame): logged, nothing to settle.

Dead letters go to the subscription's dead letter topic, moved there by the server (its
``maxRedeliverCount``): ``DeadLetterNacks`` tracks the deliveries negatively acknowledged for it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import codec
from app.cqrs.events import CONTENT_TYPE, TYPE_PREFIX
from app.cqrs.payload import SignalType
from app.cqrs.replica import ReplicaRegistry

SIGNALS = {signal.value.lower(): signal for signal in SignalType}
# What of a frame is quoted in a log line at most.
SHOWN_CHARS = 200


class DeliveryFrame(BaseModel):
    """server -> consumer: one message of the subscription (README "Pulsar websocket API")."""

    model_config = ConfigDict(extra="ignore")

    messageId: str = Field(min_length=1)
    payload: str
    redeliveryCount: int = Field(0, ge=0)


class CloudEvent(BaseModel):
    """The structured CloudEvent (JSON format) in a delivery's payload: the attributes read here."""

    model_config = ConfigDict(extra="ignore")

    specversion: str
    id: str
    type: str
    datacontenttype: str | None = None
    data: Any = None


class AckFrame(BaseModel):
    """consumer -> server: the message is settled (applied, skipped or moved on)."""

    messageId: str


class NackFrame(BaseModel):
    """consumer -> server: redeliver it (counted; past maxRedeliverCount it is moved to the dead letters)."""

    type: Literal["negativeAcknowledge"] = "negativeAcknowledge"
    messageId: str


@dataclass(frozen=True, slots=True)
class Change:
    message_id: str
    redelivery_count: int
    body: bytes  # the django-cqrs payload as JSON
    routing_key: str | None = None  # a topic has none: no SYNC is routed to one replica alone


@dataclass(frozen=True, slots=True)
class Skip:
    message_id: str
    redelivery_count: int
    reason: str
    level: int  # logging.DEBUG for others' traffic, logging.WARNING for a frame that is no delivery


@dataclass(frozen=True, slots=True)
class Reject:
    message_id: str
    redelivery_count: int
    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    text: str


Received = Change | Skip | Reject | Notice


def read_frame(text: str | bytes) -> Received:
    """What one frame from the server is (see the module's docstring)."""
    try:
        raw = codec.loads(text)
    except codec.DecodeError:
        return Notice(f"a frame that is not JSON: {shown(text)}")
    if not isinstance(raw, dict) or "messageId" not in raw:
        return Notice(shown(text))
    try:
        frame = DeliveryFrame.model_validate(raw)
    except ValidationError as exc:
        message_id = raw["messageId"]
        if not isinstance(message_id, str) or not message_id:
            return Notice(f"a delivery without a usable messageId: {shown(text)}")
        count = raw.get("redeliveryCount")
        return Skip(message_id, count if isinstance(count, int) and count >= 0 else 0,
                    f"not a delivery: {exc.errors(include_url=False)}", logging.WARNING)
    return read_event(frame)


def read_event(frame: DeliveryFrame) -> Change | Skip | Reject:
    """The delivery's CloudEvent as a change of a replica model here, or why it is not one."""
    ids = frame.messageId, frame.redeliveryCount
    try:
        document = codec.loads(base64.b64decode(frame.payload, validate=True))
        event = CloudEvent.model_validate(document)
    except (binascii.Error, ValueError, ValidationError):
        # codec.DecodeError is a ValueError, as is a payload that is no base64 text. Another client's
        # payload on a shared topic: as normal as another service's event, so no WARNING per message.
        return Skip(*ids, f"payload is no structured CloudEvent: {shown(frame.payload)}", logging.DEBUG)
    parsed = change_type(event.type)
    if parsed is None:
        return Skip(*ids, f"event type {shown(event.type)} is no CQRS change", logging.DEBUG)
    cqrs_id, signal = parsed
    if ReplicaRegistry.get_model_by_cqrs_id(cqrs_id) is None:
        return Skip(*ids, f"no replica model here for CQRS_ID {shown(cqrs_id)}", logging.DEBUG)
    problem = payload_problem(event, cqrs_id, signal)
    if problem is not None:
        return Reject(*ids, f"event {shown(event.id)} of type {shown(event.type)}: {problem}")
    return Change(*ids, body=codec.dumps_bytes(event.data))


def change_type(event_type: str) -> tuple[str, SignalType] | None:
    """(cqrs_id, signal) of a ``cqrs.<cqrs_id>.<save|delete|sync>`` type; a cqrs_id may hold dots."""
    if not event_type.startswith(TYPE_PREFIX):
        return None
    cqrs_id, _, signal = event_type[len(TYPE_PREFIX):].rpartition(".")
    found = SIGNALS.get(signal)
    return None if not cqrs_id or found is None else (cqrs_id, found)


def payload_problem(event: CloudEvent, cqrs_id: str, signal: SignalType) -> str | None:
    """Why the event's data is no payload of the change its type names, or None. The payload itself
    is checked by app/cqrs/apply.py (``parse``) as any other."""
    if event.specversion != "1.0":
        return f"specversion {shown(event.specversion)}, not 1.0"
    if event.datacontenttype != CONTENT_TYPE:
        return f"datacontenttype {shown(str(event.datacontenttype))}, not {CONTENT_TYPE}"
    data = event.data
    if not isinstance(data, dict):
        return "data is not a JSON object"
    if data.get("cqrs_id") != cqrs_id or str(data.get("signal_type", "")).upper() != signal.value:
        return (f"the payload is a {shown(str(data.get('signal_type')))} of {shown(str(data.get('cqrs_id')))}, "
                "not what its type says")
    return None


def shown(value: str | bytes) -> str:
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return repr(text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}…")


def ack_frame(message_id: str) -> str:
    return codec.dumps(AckFrame(messageId=message_id).model_dump())


def nack_frame(message_id: str) -> str:
    return codec.dumps(NackFrame(messageId=message_id).model_dump())


# --- the subscription ------------------------------------------------------------------------------


def consumer_url(base: str, topic: str, subscription: str, *, receiver_queue_size: int,
                 max_redeliver_count: int) -> str:
    """The consumer path on the server at ``base`` (ws:// or wss://, maybe with a path prefix):
    an ``Exclusive`` durable subscription (one consumer applies an instance's changes in order; a
    second replica process gets 409 and waits), at most ``receiver_queue_size`` unacked messages in
    flight (what the consumer may hold in memory), dead letters after ``max_redeliver_count``
    redeliveries, and negative acks redelivered at once (they are only sent to dead-letter)."""
    query = urlencode({
        "subscriptionType": "Exclusive",
        "receiverQueueSize": receiver_queue_size,
        "maxRedeliverCount": max_redeliver_count,
        "negativeAckRedeliveryDelay": 0,
        "consumerName": "switchyard-cqrs-replica",
    })
    path = f"/ws/v2/consumer/persistent/public/default/{quote(topic, safe='')}/{quote(subscription, safe='')}"
    return f"{base.rstrip('/')}{path}?{query}"


def dead_letter_topic(topic: str, subscription: str) -> str:
    """Where the server moves the subscription's dead letters (Pulsar's default name)."""
    return f"{topic}-{subscription}-DLQ"


def refusal_reason(body: bytes) -> str:
    """The reason of a refused handshake: its JSON body's ``error``, else the body as text."""
    try:
        raw = codec.loads(body)
    except codec.DecodeError:
        raw = None
    if isinstance(raw, dict) and isinstance(raw.get("error"), str):
        return str(raw["error"])[:SHOWN_CHARS]
    return shown(body) if body else "no reason given"


class DeadLetterNacks:
    """Deliveries this consumer dead-lettered, negatively acknowledged until the server moves them.

    The server moves a message once it is about to be redelivered more than ``max_redeliver_count``
    times; each negative ack is one redelivery. A delivery dead-lettered here is therefore nacked
    again each time it comes back, without being applied, until the nack that takes it past the
    count (``condemn`` says which one that is): then it is forgotten (it will not come back), and
    only then are the later deliveries of its instance, held meanwhile, handled. Should it come back
    all the same (the dead letter topic could not take it) or with a new connection (this is per
    connection; the held ones come back behind it), it is handled afresh. At most the receiver
    queue's worth of ids is kept: nacked messages count against it."""

    def __init__(self, max_redeliver_count: int) -> None:
        self.max_redeliver_count = max_redeliver_count
        self._ids: set[str] = set()

    def condemn(self, message_id: str, redelivery_count: int) -> bool:
        """The delivery is nacked for its dead letter now: whether this is the nack that moves it."""
        if redelivery_count < self.max_redeliver_count:
            self._ids.add(message_id)
            return False
        self._ids.discard(message_id)
        return True

    def again(self, message_id: str) -> bool:
        """Whether a delivery came back to be nacked once more (then ``condemn`` it again)."""
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


def connection_end(gave_back: bool, code: int | None, reason: str) -> str:
    """Why a connection that worked ended, for the log: closed here to be sent the unsettled messages
    again (after a settle failed), or by the server, with its close code and reason."""
    if gave_back:
        return "closed the connection to be sent the unsettled messages again, in order"
    return f"the server closed the connection ({code}{f' {reason}' if reason else ''})"


def redeliveries_left(redelivery_count: int, max_redeliver_count: int) -> int | None:
    """How many more redeliveries a delivery has before the server moves it to the dead letters
    unapplied, once it has used half of them or more (else None: nothing to say). Every connection
    that ends counts one for each message it left unacked, so a replica that keeps crashing or
    losing its connection uses them up without applying anything."""
    if redelivery_count * 2 < max_redeliver_count:
        return None
    return max(0, max_redeliver_count - redelivery_count)


def refusal_level(status: int, again: bool) -> int:
    """The level of a refused handshake: a standby's 409 (another consumer holds the subscription)
    is a WARNING the first time only; every other refusal needs someone, each time."""
    return logging.INFO if status == 409 and again else logging.WARNING


def token_in_clear(url: str, token: str | None) -> bool:
    """Whether ``token`` would go unencrypted (``ws://``) to another machine than this one."""
    parts = urlsplit(url)
    if not token or parts.scheme != "ws" or parts.hostname is None:
        return False
    if parts.hostname == "localhost":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return True  # a name: it may resolve anywhere
