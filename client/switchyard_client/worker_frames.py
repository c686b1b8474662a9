"""The frames of the worker socket ``/ws/workers/`` (Switchyard's README "Workers and work requests"):
JSON objects told apart by ``type``. The server reads and writes these same models (its
``consumers/worker_frames.py`` imports them from here), so a worker built on them cannot disagree
with it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# --- server -> worker ----------------------------------------------------------------------------


class ServerFrame(BaseModel):
    """Frames are dumped with only the fields they were given (the server's app/codec.py): ``type``
    always counts as given, so it is never left out."""

    def model_post_init(self, context: Any) -> None:
        self.__pydantic_fields_set__.add("type")


class ConnectedFrame(ServerFrame):
    type: Literal["connected"] = "connected"
    worker: str
    # Send a frame (``heartbeat`` when there is nothing else) at least this often.
    heartbeat_interval_s: float
    # Silent this long, the worker is lost: disconnected, its requests given to others.
    lost_after_s: float


class RequestDynamicMetadataFrame(ServerFrame):
    """Send ``metadata``: work is offered once the worker said what it has."""

    type: Literal["request_dynamic_metadata"] = "request_dynamic_metadata"


class WorkRequestPayload(BaseModel):
    id: int
    task_name: str
    task_data: Any
    priority: int
    priority_base: int
    priority_adjustment: int
    # This run's number: more than 1 when a lost worker ran it before.
    attempts: int
    created_at: datetime
    started_at: datetime | None


class WorkRequestAvailableFrame(ServerFrame):
    """A request is now running on this worker: run it, then send ``completed``."""

    type: Literal["work_request_available"] = "work_request_available"
    work_request: WorkRequestPayload


class AbortedFrame(ServerFrame):
    """The request was aborted (by an admin or a client): stop it; nothing is to be reported."""

    type: Literal["aborted"] = "aborted"
    work_request_id: int


class ConnectionRejectedFrame(ServerFrame):
    """Sent before the server closes with 4401: at connection, or when the token is disabled later."""

    type: Literal["connection_rejected"] = "connection_rejected"
    reason_code: str
    reason: str


class WorkerErrorFrame(ServerFrame):
    """A frame the server could not take; the connection stays open."""

    type: Literal["error"] = "error"
    error: str
    work_request_id: int | None = None


AnyServerFrame = Annotated[
    ConnectedFrame | RequestDynamicMetadataFrame | WorkRequestAvailableFrame | AbortedFrame | ConnectionRejectedFrame
    | WorkerErrorFrame,
    Field(discriminator="type"),
]
server_frame: TypeAdapter[AnyServerFrame] = TypeAdapter(AnyServerFrame)
SERVER_FRAME_TYPES = ("connected", "request_dynamic_metadata", "work_request_available", "aborted",
                      "connection_rejected", "error")

# --- worker -> server ----------------------------------------------------------------------------


class WorkerFrame(BaseModel):
    # Keys a newer worker adds are ignored; the ones named here must have their types.
    model_config = ConfigDict(extra="ignore", strict=True)


class MetadataFrame(WorkerFrame):
    """What the worker has (its ``dynamic_metadata``, replaced whole), matched against ``requires``."""

    type: Literal["metadata"]
    metadata: dict[str, Any]


class StartedFrame(WorkerFrame):
    type: Literal["started"]
    work_request_id: int


class ProgressFrame(WorkerFrame):
    type: Literal["progress"]
    work_request_id: int
    # How far it is, 0 to 1, if it knows: as the HTTP progress report (app/api/worker_polling.py).
    fraction: float | None = Field(None, ge=0, le=1)
    message: str | None = Field(None, max_length=1000)


class CompletedFrame(WorkerFrame):
    type: Literal["completed"]
    work_request_id: int
    result: Literal["success", "failure", "error"]
    output_data: Any = None
    # The ``attempts`` the request was given with: a late report of an earlier run then records
    # nothing. Without it, the run this connection was given.
    attempt: int | None = Field(None, ge=1)


class HeartbeatFrame(WorkerFrame):
    type: Literal["heartbeat"]


WORKER_FRAME_TYPES = ("metadata", "started", "progress", "completed", "heartbeat")

AnyWorkerFrame = Annotated[
    MetadataFrame | StartedFrame | ProgressFrame | CompletedFrame | HeartbeatFrame, Field(discriminator="type")
]
worker_frame: TypeAdapter[AnyWorkerFrame] = TypeAdapter(AnyWorkerFrame)
