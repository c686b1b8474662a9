"""The frames of the worker socket ``/ws/workers/`` (README "Workers and work requests"): JSON
objects told apart by ``type``. Worker frames are validated here; anything else gets an ``error``
frame and the connection stays open.

The frames are the client SDK's models (``switchyard_client.worker_frames``), so the server and the
SDK's ``Worker`` cannot disagree; this module adds how the server builds a request's payload."""

from __future__ import annotations

from app.work.models import WorkRequest
from switchyard_client.worker_frames import (
    WORKER_FRAME_TYPES,
    AbortedFrame,
    AnyWorkerFrame,
    CompletedFrame,
    ConnectedFrame,
    ConnectionRejectedFrame,
    HeartbeatFrame,
    MetadataFrame,
    ProgressFrame,
    RequestDynamicMetadataFrame,
    ServerFrame,
    StartedFrame,
    WorkerErrorFrame,
    WorkerFrame,
    WorkRequestAvailableFrame,
    WorkRequestPayload,
    worker_frame,
)

__all__ = [
    "WORKER_FRAME_TYPES", "AbortedFrame", "AnyWorkerFrame", "CompletedFrame", "ConnectedFrame",
    "ConnectionRejectedFrame", "HeartbeatFrame", "MetadataFrame", "ProgressFrame", "RequestDynamicMetadataFrame",
    "ServerFrame", "StartedFrame", "WorkRequestAvailableFrame", "WorkRequestPayload", "WorkerErrorFrame",
    "WorkerFrame", "work_request_payload", "worker_frame",
]


def work_request_payload(request: WorkRequest) -> WorkRequestPayload:
    """A request as ``work_request_available`` gives it to the worker that now runs it."""
    return WorkRequestPayload(
        id=request.pk, task_name=request.task_name, task_data=request.task_data, priority=request.priority,
        priority_base=request.priority_base, priority_adjustment=request.priority_adjustment,
        attempts=request.attempts, created_at=request.created_at, started_at=request.started_at,
    )
