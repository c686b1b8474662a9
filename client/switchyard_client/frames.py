"""The wire frames of Switchyard's websocket API: the DASF shape, Apache Pulsar's websocket API and the
status feed. The server reads and writes these same models (its ``consumers`` import them from here),
so a client built on them cannot disagree with it.

Frames are JSON objects. Models that a peer may extend keep unknown keys (``extra="allow"``): a
producer's own fields are relayed to consumers exactly as sent.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Context = int | str


class ProducerFrame(BaseModel):
    """producer -> broker. Unknown keys are kept and relayed exactly as received."""

    model_config = ConfigDict(extra="allow", strict=True)

    payload: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    context: Context | None = None
    messageId: str | None = None

    @field_validator("messageId")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        # Canonical form, so the id a consumer acks matches the stored one however it was spelled.
        return None if value is None else str(uuid.UUID(value))


class ProducerAck(BaseModel):
    """broker -> producer. ``result`` is "ok" or contains "error" (the DASF client waits otherwise)."""

    messageId: str
    # Echoed as received, whatever JSON it was, when small: a client matches acks to requests by it.
    context: Any = None
    result: str
    errorMsg: str | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"


class ConsumerAck(BaseModel):
    """consumer -> broker: acknowledges one delivered message; never answered on success. Nothing
    else may be in it: a frame that says more (``{"Type": "nack", ...}``) is not taken as an ack."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messageId: str


class MessageIdFrame(BaseModel):
    """consumer -> broker on ``/ws/v2/consumer/...``: a control frame naming one delivered message
    (``{"type": "negativeAcknowledge", "messageId"}``)."""

    model_config = ConfigDict(strict=True)

    type: str
    messageId: str


class PermitFrame(BaseModel):
    """consumer -> broker on ``/ws/v2/consumer/...`` in pull mode: ``permitMessages`` more messages
    may be sent."""

    type: Literal["permit"]
    permitMessages: int = Field(gt=0)


class ControlFrame(BaseModel):
    """consumer / reader -> broker on ``/ws/v2/...``: ``isEndOfTopic`` (answered with
    ``EndOfTopicFrame``) or, on subscriptions, ``unsubscribe`` (deletes the subscription and closes)."""

    type: Literal["isEndOfTopic", "unsubscribe"]


class PulsarPublishFrame(ProducerFrame):
    """producer -> broker on ``/ws/v2/producer/...`` for a topic with Pulsar semantics: a
    ``ProducerFrame`` whose payload is required base64."""

    payload: str
    key: str | None = None
    deliverAt: Annotated[int | None, Field(description="epoch milliseconds; 0 or less: no delay")] = None
    deliverAfterMs: Annotated[int | None, Field(description="milliseconds from now; wins over deliverAt")] = None
    replicationClusters: Annotated[list[str] | None, Field(description="accepted, ignored")] = None


# Fields the broker sets on deliveries; a producer's own values for them are not relayed.
BROKER_FIELDS = ("messageId", "publishTime", "redeliveryCount")


class EndOfTopicFrame(BaseModel):
    """broker -> consumer on ``/ws/v2/consumer/...``: the answer to ``{"type": "isEndOfTopic"}``.
    Always false: Switchyard never terminates a topic."""

    endOfTopic: bool


class DeliveryFrame(BaseModel):
    """broker -> consumer: the producer's object plus messageId and publishTime."""

    model_config = ConfigDict(extra="allow")

    messageId: str
    publishTime: str
    redeliveryCount: int | None = None


class ErrorFrame(BaseModel):
    """broker -> consumer, for a frame it could not take. ``result`` always contains "error"."""

    result: str
    errorMsg: str


class HandshakeRefusal(BaseModel):
    """The JSON body of a handshake refused with an HTTP status (e.g. 429)."""

    error: str


class Availability(enum.StrEnum):
    """Whether a topic is served: its consumers answered the latest ping (online), did not (offline),
    or it was not pinged lately or is no DASF topic (unknown)."""

    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class ApiClassFrame(BaseModel):
    name: str
    methods: list[str]


class ApiInfoFrame(BaseModel):
    """The names a topic's backend module announced."""

    functions: list[str]
    classes: list[ApiClassFrame]
    omitted: int


class StatusFrame(BaseModel):
    """broker -> status viewer: a topic's availability (sent on connect and whenever what it shows changes)."""

    type: Literal["status"] = "status"
    topic: str
    status: Availability
    lastPing: datetime | None
    lastPong: datetime | None
    # Left out (not null) when the viewer was already sent this API for the topic.
    apiInfo: ApiInfoFrame | None = None


class StatusSyncedFrame(BaseModel):
    """broker -> status viewer, once after the statuses sent on connect: those were every topic the
    viewer may see (a page drops the rows it did not get: topics deleted while it was away)."""

    type: Literal["synced"] = "synced"
    topics: int


class StatusGoneFrame(BaseModel):
    """broker -> status viewer: a topic it was shown was deleted or is no longer visible to it."""

    type: Literal["gone"] = "gone"
    topic: str
