"""The AsyncAPI 3.0 document of Switchyard's websocket channels (served at ``/api/v1/asyncapi.json``).

Messages are generated from the pydantic frame models the consumers read and write
(consumers/frames.py), query parameters from the models that read them at the handshake
(app/pulsar/params.py, producers.py, reader.py), so the contract cannot drift from the code. The
document describes Switchyard itself: ``receive`` operations are frames clients send to it,
``send`` operations frames it sends to them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.broker.models import STATUS_PING_TOPIC
from app.pulsar.params import ConsumerParams, QueryParams
from app.pulsar.producers import ProducerParams
from app.pulsar.reader import ReaderParams
from app.work.watching import FeedParams
from consumers.frames import (
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
    WorkRequestFrame,
    WorkRequestsSyncedFrame,
)
from consumers.worker_frames import (
    AbortedFrame,
    CompletedFrame,
    ConnectedFrame,
    ConnectionRejectedFrame,
    HeartbeatFrame,
    MetadataFrame,
    ProgressFrame,
    RequestDynamicMetadataFrame,
    StartedFrame,
    WorkerErrorFrame,
    WorkRequestAvailableFrame,
)

ASYNCAPI_VERSION = "3.0.0"
SCHEMAS = "#/components/schemas/{model}"
WS_BINDING_VERSION = "0.1.0"

Mode = Literal["validation", "serialization"]


@dataclass(frozen=True, slots=True)
class Frame:
    model: type[BaseModel]
    # Frames a client sends are described as they are read, frames Switchyard sends as they are written.
    mode: Mode


FRAMES: dict[str, Frame] = {
    "producerFrame": Frame(ProducerFrame, "validation"),
    "pulsarPublishFrame": Frame(PulsarPublishFrame, "validation"),
    "producerAck": Frame(ProducerAck, "serialization"),
    "consumerAck": Frame(ConsumerAck, "validation"),
    "negativeAcknowledge": Frame(MessageIdFrame, "validation"),
    "permit": Frame(PermitFrame, "validation"),
    "controlFrame": Frame(ControlFrame, "validation"),
    "delivery": Frame(DeliveryFrame, "serialization"),
    "endOfTopic": Frame(EndOfTopicFrame, "serialization"),
    "error": Frame(ErrorFrame, "serialization"),
    "status": Frame(StatusFrame, "serialization"),
    "statusSynced": Frame(StatusSyncedFrame, "serialization"),
    "statusGone": Frame(StatusGoneFrame, "serialization"),
    "workRequest": Frame(WorkRequestFrame, "serialization"),
    "workRequestsSynced": Frame(WorkRequestsSyncedFrame, "serialization"),
    "workerMetadata": Frame(MetadataFrame, "validation"),
    "workerStarted": Frame(StartedFrame, "validation"),
    "workerProgress": Frame(ProgressFrame, "validation"),
    "workerCompleted": Frame(CompletedFrame, "validation"),
    "workerHeartbeat": Frame(HeartbeatFrame, "validation"),
    "workerConnected": Frame(ConnectedFrame, "serialization"),
    "requestDynamicMetadata": Frame(RequestDynamicMetadataFrame, "serialization"),
    "workRequestAvailable": Frame(WorkRequestAvailableFrame, "serialization"),
    "workRequestAborted": Frame(AbortedFrame, "serialization"),
    "connectionRejected": Frame(ConnectionRejectedFrame, "serialization"),
    "workerError": Frame(WorkerErrorFrame, "serialization"),
}

PARAMETERS: dict[str, str] = {
    "topic": "The topic's slug.",
    "subscription": "The subscription: on DASF topics the consumer's name (its delivery state), on "
                    "Pulsar topics a durable cursor (at most 200 characters).",
    "persistence": "Pulsar's persistence part (persistent, non-persistent): accepted and ignored.",
    "tenant": "Pulsar's tenant: accepted and ignored (topics are one namespace).",
    "namespace": "Pulsar's namespace: accepted and ignored (topics are one namespace).",
}

TOKEN_QUERY = {"type": "string", "description": "An API token (else the Authorization header, else the session)."}
PULSAR_PREFIX = "/ws/v2/{kind}/{{persistence}}/{{tenant}}/{{namespace}}/"
HANDSHAKE = ("Handshakes refused before accept get an HTTP status and a JSON body (HandshakeRefusal): 400, 401, "
             "403, 404, 409, 429, 503.")


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    address: str
    description: str
    receives: tuple[str, ...]  # frames clients send to Switchyard
    sends: tuple[str, ...]  # frames Switchyard sends to clients
    query: type[QueryParams] | None = None


def _pulsar(kind: str, rest: str) -> str:
    return PULSAR_PREFIX.format(kind=kind) + rest


CHANNELS: tuple[Channel, ...] = (
    Channel("dasfProducer", "/ws/{topic}",
            "Publish to a topic (DASF). Each frame is acked once stored (or at once on a topic that stores nothing).",
            ("producerFrame",), ("producerAck",)),
    Channel("dasfConsumer", "/ws/{topic}/{subscription}",
            "Consume a topic (DASF): deliveries, replay of what was not acked on reconnect; ack each message.",
            ("consumerAck",), ("delivery", "error")),
    Channel("pulsarProducer", _pulsar("producer", "{topic}"),
            "Publish to a topic (Pulsar's websocket producer). On a DASF topic frames are read as on "
            "/ws/{topic}. " + HANDSHAKE,
            ("pulsarPublishFrame",), ("producerAck",), ProducerParams),
    Channel("pulsarConsumer", _pulsar("consumer", "{topic}/{subscription}"),
            "Consume through a subscription (Pulsar's websocket consumer; on a DASF topic as on "
            "/ws/{topic}/{subscription}, with isEndOfTopic). The same path without a subscription is refused "
            "with 400. " + HANDSHAKE,
            ("consumerAck", "negativeAcknowledge", "permit", "controlFrame"), ("delivery", "endOfTopic", "error"),
            ConsumerParams),
    Channel("pulsarReader", _pulsar("reader", "{topic}"),
            "Read a topic from a position (Pulsar's websocket reader); acks only free flow-control credit. "
            + HANDSHAKE,
            ("consumerAck", "controlFrame"), ("delivery", "endOfTopic", "error"), ReaderParams),
    Channel("statusPing", f"/ws/{STATUS_PING_TOPIC}",
            "Answer a topic's availability ping: a frame whose properties.source_topic names the topic.",
            ("producerFrame",), ("producerAck", "error")),
    Channel("pulsarStatusPing", _pulsar("producer", STATUS_PING_TOPIC),
            "The status-ping channel on Pulsar's producer path.",
            ("producerFrame",), ("producerAck", "error")),
    Channel("status", "/ws/status/",
            "Live availability of every topic the caller may see: one status per topic on connect, then "
            "synced, then changes. Nothing is read from it.",
            (), ("status", "statusSynced", "statusGone", "error")),
    Channel("workRequests", "/ws/work-requests/",
            "Work request changes: with completed_since, first the requests that completed or were aborted "
            "since then (replayed, oldest first), then every change as it happens; synced between the two. "
            "A user with the work.view_workrequest permission sees every request, others their own. Nothing "
            "is read from it. Anonymous handshakes are refused with 401, bad parameters with 400.",
            (), ("workRequest", "workRequestsSynced", "error"), FeedParams),
    Channel("workers", "/ws/workers/",
            "A worker's socket (its own token: Authorization header or ?token=; a user's token is refused with "
            "TOKEN_UNKNOWN). connected and request_dynamic_metadata on connect; work is offered once metadata "
            "came; send a frame (heartbeat) at least every heartbeat_interval_s.",
            ("workerMetadata", "workerStarted", "workerProgress", "workerCompleted", "workerHeartbeat"),
            ("workerConnected", "requestDynamicMetadata", "workRequestAvailable", "workRequestAborted",
             "connectionRejected", "workerError")),
)


def _parameters(address: str) -> dict[str, Any]:
    return {name: {"description": text} for name, text in PARAMETERS.items() if "{" + name + "}" in address}


def _query(params: type[QueryParams] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {"token": TOKEN_QUERY}}
    if params is not None:
        generated = params.model_json_schema(mode="validation")
        schema["properties"].update(generated["properties"])
        schema["description"] = generated.get("description", "")
    return schema


def _channel(channel: Channel) -> dict[str, Any]:
    document: dict[str, Any] = {
        "address": channel.address,
        "title": channel.name,
        "description": channel.description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in channel.receives + channel.sends},
        "bindings": {"ws": {"method": "GET", "query": _query(channel.query), "bindingVersion": WS_BINDING_VERSION}},
    }
    if parameters := _parameters(channel.address):
        document["parameters"] = parameters
    return document


def _operations(channel: Channel) -> dict[str, Any]:
    operations = {}
    for action, frames in (("receive", channel.receives), ("send", channel.sends)):
        if frames:
            operations[f"{channel.name}.{action}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel.name}"},
                "summary": f"{'Clients send' if action == 'receive' else 'Switchyard sends'}: {', '.join(frames)}",
                "messages": [{"$ref": f"#/channels/{channel.name}/messages/{name}"} for name in frames],
            }
    return operations


def _message(name: str, frame: Frame) -> dict[str, Any]:
    doc = (frame.model.__doc__ or "").strip()
    return {
        "name": frame.model.__name__,
        "title": name,
        "summary": doc.split("\n", 1)[0],
        "description": doc,
        "contentType": "application/json",
        "payload": {"$ref": SCHEMAS.format(model=frame.model.__name__)},
    }


@functools.cache
def _components() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Mode]] = [(frame.model, frame.mode) for frame in FRAMES.values()]
    models.append((HandshakeRefusal, "serialization"))
    _, definitions = models_json_schema(models, ref_template=SCHEMAS)
    return {
        "schemas": definitions["$defs"],
        "messages": {name: _message(name, frame) for name, frame in FRAMES.items()},
        "securitySchemes": {
            "queryToken": {"type": "httpApiKey", "name": "token", "in": "query",
                           "description": "An API token in the handshake's query string."},
            "headerToken": {"type": "httpApiKey", "name": "Authorization", "in": "header",
                            "description": "`Token <key>` or `Bearer <key>`."},
        },
    }


def asyncapi_document(host: str, secure: bool = False) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every websocket channel, for a server reached at ``host``."""
    operations: dict[str, Any] = {}
    for channel in CHANNELS:
        operations.update(_operations(channel))
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Switchyard websockets",
            "version": "1",
            "description": "DASF and Apache Pulsar websocket shapes on the same topics. Operations are "
                           "Switchyard's: `receive` is what clients send, `send` what they get. Without a token "
                           "a handshake uses the session cookie, else it is anonymous.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "switchyard": {
                "host": host,
                "protocol": "wss" if secure else "ws",
                "security": [{"$ref": "#/components/securitySchemes/queryToken"},
                             {"$ref": "#/components/securitySchemes/headerToken"}],
            },
        },
        "channels": {channel.name: _channel(channel) for channel in CHANNELS},
        "operations": operations,
        "components": _components(),
    }
