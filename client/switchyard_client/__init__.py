"""Switchyard's asyncio client: producers, consumers and readers on Pulsar's websocket API, DASF
request / reply, topic status, outbox events, and workers that run work requests."""

from switchyard_client.client import Client
from switchyard_client.consumer import Consumer, Reader
from switchyard_client.errors import (
    ClientClosed,
    ConnectionRefused,
    ConnectTimeout,
    FrameTooLarge,
    HTTPError,
    RequestError,
    RequestTimeout,
    SendError,
    SendTimeout,
    ServerError,
    SwitchyardError,
    Unreachable,
    WorkerRejected,
    WorkFailed,
)
from switchyard_client.message import Message
from switchyard_client.producer import Outgoing, Producer
from switchyard_client.worker import Progress, Worker, WorkRequest

__all__ = [
    "Client", "ClientClosed", "ConnectionRefused", "ConnectTimeout", "Consumer", "FrameTooLarge", "HTTPError",
    "Message", "Outgoing", "Producer", "Progress", "Reader", "RequestError", "RequestTimeout", "SendError",
    "SendTimeout", "ServerError", "SwitchyardError", "Unreachable", "WorkFailed", "WorkRequest", "Worker",
    "WorkerRejected",
]
