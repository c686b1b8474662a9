"""The client's one JSON codec (orjson) and payload encoding: Pulsar's websocket API carries a
message's bytes as standard base64 text."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from pydantic import BaseModel

DecodeError = orjson.JSONDecodeError


def loads(data: str | bytes) -> Any:
    return orjson.loads(data)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def dump_frame(frame: BaseModel) -> str:
    """A frame as sent: fields left at None are left out (Pulsar reads a missing field as unset)."""
    return orjson.dumps(frame.model_dump(mode="json", exclude_none=True)).decode()


def encode_payload(data: bytes | str) -> str:
    """``data`` as a frame's ``payload``: text is sent as its UTF-8 bytes."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def decode_payload(payload: str | None) -> bytes:
    """A delivered ``payload``'s bytes; a frame without one carries no bytes. A payload that is not
    base64 (DASF topics relay whatever a producer sent) is returned as its text's bytes."""
    if not payload:
        return b""
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return payload.encode()


def to_json_bytes(value: Any) -> bytes:
    return orjson.dumps(value)
