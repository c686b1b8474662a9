"""The wire frames of the DASF / Pulsar websocket protocol (docs/dasf-protocol.md sections 3-6)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.availability.api_info import ApiSummary
from app.availability.rules import Availability
from app.availability.services import TopicStatus
from app.work.events import Reason, WorkRequestEvent, WorkRequestState

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
    # Echoed as received, whatever JSON it was, when small (consumers.base.context_echo): a client
    # matches acks to requests by it.
    context: Any = None
    result: str
    errorMsg: str | None = None


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
    may be sent. Read field by field (app/pulsar/flow.py ``permit_count``); this is its shape."""

    type: Literal["permit"]
    permitMessages: int = Field(gt=0)


class ControlFrame(BaseModel):
    """consumer / reader -> broker on ``/ws/v2/...``: ``isEndOfTopic`` (answered with
    ``EndOfTopicFrame``) or, on subscriptions, ``unsubscribe`` (deletes the subscription and closes)."""

    type: Literal["isEndOfTopic", "unsubscribe"]


class PulsarPublishFrame(ProducerFrame):
    """producer -> broker on ``/ws/v2/producer/...`` for a topic with Pulsar semantics: a
    ``ProducerFrame`` whose payload is required base64, checked field by field by
    app/pulsar/frames.py ``publish_frame_error`` (``send-error:<code>`` acks); this is its shape."""

    payload: str
    key: str | None = None
    deliverAt: int | None = Field(None, description="epoch milliseconds; 0 or less: no delay")
    deliverAfterMs: int | None = Field(None, description="milliseconds from now; wins over deliverAt")
    replicationClusters: list[str] | None = Field(None, description="accepted, ignored")


# Fields the broker sets on deliveries; a producer's own values for them are not relayed.
BROKER_FIELDS = ("messageId", "publishTime", "redeliveryCount")


class EndOfTopicFrame(BaseModel):
    """broker -> consumer on ``/ws/v2/consumer/...``: the answer to ``{"type": "isEndOfTopic"}``.
    Always false: Switchyard never terminates a topic (docs/architecture.md 18.2)."""

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


class ApiClassFrame(BaseModel):
    name: str
    methods: list[str]


class ApiInfoFrame(BaseModel):
    """The names a topic's backend module announced (app/availability/api_info.py)."""

    functions: list[str]
    classes: list[ApiClassFrame]
    omitted: int

    @classmethod
    def of(cls, api: ApiSummary) -> ApiInfoFrame:
        return cls(functions=list(api.functions), omitted=api.omitted,
                   classes=[ApiClassFrame(name=c.name, methods=list(c.methods)) for c in api.classes])


class StatusFrame(BaseModel):
    """broker -> status viewer: a topic's availability (sent on connect and whenever what it shows changes)."""

    type: Literal["status"] = "status"
    topic: str
    status: Availability
    lastPing: datetime | None
    lastPong: datetime | None
    # Left out (not null) when the viewer was already sent this API for the topic.
    apiInfo: ApiInfoFrame | None = None

    @classmethod
    def of(cls, status: TopicStatus, with_api: bool = True) -> StatusFrame:
        # type is passed explicitly: frames are dumped with exclude_unset.
        frame = cls(type="status", topic=status.slug, status=status.status, lastPing=status.last_ping,
                    lastPong=status.last_pong)
        if with_api:
            frame.apiInfo = None if status.api is None else ApiInfoFrame.of(status.api)
        return frame


class StatusSyncedFrame(BaseModel):
    """broker -> status viewer, once after the statuses sent on connect: those were every topic the
    viewer may see (a page drops the rows it did not get: topics deleted while it was away)."""

    type: Literal["synced"] = "synced"
    topics: int


class StatusGoneFrame(BaseModel):
    """broker -> status viewer: a topic it was shown was deleted or is no longer visible to it."""

    type: Literal["gone"] = "gone"
    topic: str


class WorkRequestFrame(WorkRequestState):
    """broker -> watcher on /ws/work-requests/: a work request's state after a change, or as it ended
    (replayed from ``completed_since``). Task and output data are left out: read them from the request."""

    type: Literal["work_request"] = "work_request"
    replayed: bool = Field(description="true: sent from the database at connect (completed_since); "
                                       "false: a change as it happened")
    reason: Reason | None = Field(description="why it changed; null when replayed (the request does not "
                                              "record it, cascaded_from names a dependency that ended it)")

    @classmethod
    def live(cls, event: WorkRequestEvent) -> WorkRequestFrame:
        # type is passed explicitly: frames are dumped with exclude_unset.
        return cls(type="work_request", replayed=False, **event.model_dump())

    @classmethod
    def replay(cls, state: WorkRequestState) -> WorkRequestFrame:
        return cls(type="work_request", replayed=True, reason=None, **state.model_dump())


class WorkRequestsSyncedFrame(BaseModel):
    """broker -> watcher on /ws/work-requests/, once: the replay and the changes made meanwhile were
    sent; every change committed from now on follows as it happens."""

    type: Literal["synced"] = "synced"
    replayed: int = Field(description="how many requests the replay sent")
