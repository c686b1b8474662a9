"""Which semantics a connection gets: decided by the URL shape and the topic (docs/architecture.md 18.1)."""

from __future__ import annotations

import enum


class PathShape(enum.Enum):
    """The URL a socket was opened on: ``/ws/<topic>...`` or ``/ws/v2/<endpoint>/...``."""

    DASF = "dasf"
    PULSAR = "pulsar"


def pulsar_semantics(path_shape: PathShape, supports_dasf: bool) -> bool:
    """Whether a connection follows Pulsar's websocket API rather than today's DASF behaviour.

    DASF topics keep today's behaviour on both shapes: ``demessaging``'s PulsarConfig opens them
    on ``/ws/v2/...`` and relies on per-principal delivery and on payload-less frames."""
    return path_shape is PathShape.PULSAR and not supports_dasf
