"""The wire frames of the DASF / Pulsar websocket protocol (docs/dasf-protocol.md sections 3-6).

The frames clients also read and write are the client SDK's models (``switchyard_client.frames``), so
the server and the client cannot disagree; this module adds how the server builds them from its own
state, and the frames only the server's own feeds send."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.availability.api_info import ApiSummary
from app.availability.services import TopicStatus
from app.work.events import Reason, WorkRequestEvent, WorkRequestState
from switchyard_client.frames import (
    BROKER_FIELDS,
    ApiClassFrame,
    ApiInfoFrame,
    Availability,
    ConsumerAck,
    ControlFrame,
    DeliveryFrame,
    EndOfTopicFrame,
    ErrorFrame,
    HandshakeRefusal,
    MessageIdFrame,
    PermitFrame,
    ProducerAck,
    ProducerFrame,
    PulsarPublishFrame,
    StatusFrame,
    StatusGoneFrame,
    StatusSyncedFrame,
)

__all__ = [
    "BROKER_FIELDS", "ApiInfoFrame", "ConsumerAck", "ControlFrame", "DeliveryFrame", "EndOfTopicFrame", "ErrorFrame",
    "HandshakeRefusal", "MessageIdFrame", "PermitFrame", "ProducerAck", "ProducerFrame", "PulsarPublishFrame",
    "StatusFrame", "StatusGoneFrame", "StatusSyncedFrame", "WorkRequestFrame", "WorkRequestsSyncedFrame",
    "api_info_frame", "status_frame",
]


def api_info_frame(api: ApiSummary) -> ApiInfoFrame:
    """The names a topic's backend module announced (app/availability/api_info.py)."""
    return ApiInfoFrame(functions=list(api.functions), omitted=api.omitted,
                        classes=[ApiClassFrame(name=c.name, methods=list(c.methods)) for c in api.classes])


def status_frame(status: TopicStatus, with_api: bool = True) -> StatusFrame:
    """A topic's status for a viewer; ``apiInfo`` only ``with_api`` (left out, not null, otherwise)."""
    # type is passed explicitly: frames are dumped with exclude_unset.
    frame = StatusFrame(type="status", topic=status.slug, status=Availability(status.status), lastPing=status.last_ping,
                        lastPong=status.last_pong)
    if with_api:
        frame.apiInfo = None if status.api is None else api_info_frame(status.api)
    return frame


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
