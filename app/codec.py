"""The one JSON codec for frames and stored frames (orjson)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

DecodeError = orjson.JSONDecodeError
EncodeError = orjson.JSONEncodeError

# Deepest nesting a frame may have (the frame object is level 1): orjson reads up to 1024 levels
# but writes only 254, so a deeper frame could be read and then neither relayed nor answered.
MAX_DEPTH = 254


def nests_too_deeply(text: str, value: Any) -> bool:
    """Whether ``value`` (parsed from ``text``) nests deeper than MAX_DEPTH levels."""
    # Each level opens a bracket: a frame with few of them (any usual one) is not encoded to find out.
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    # Encoding fails on depth alone: what orjson parsed has no other unencodable values.
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


def too_deep_to_parse(error: DecodeError) -> bool:
    """Whether ``loads`` refused a text for nesting deeper than orjson reads (1024 levels), rather
    than for other invalid JSON. orjson's message tells ("depth limit exceeded"; other builds may say
    "recursion"): a scan of the text for its depth would cost tens of milliseconds per megabyte of
    every invalid frame, in Python."""
    message = error.msg.lower()
    return "depth" in message or "recursion" in message


def loads(data: str | bytes) -> Any:
    return orjson.loads(data)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def dump_model(model: BaseModel) -> str:
    """Serialise a frame model with only the fields it was given (a missing payload stays missing)."""
    return orjson.dumps(model.model_dump(mode="json", exclude_unset=True, by_alias=True)).decode()


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value)


def raw_json(encoded: bytes) -> Any:
    """Already-encoded JSON to embed as is in a document passed to ``dumps`` (no re-parse)."""
    return orjson.Fragment(encoded)
