"""The one JSON codec for frames and stored frames (orjson)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import BaseModel

DecodeError = orjson.JSONDecodeError
EncodeError = orjson.JSONEncodeError

# Deepest nesting a frame may have (the frame object is level 1): orjson reads up to 1024 levels
# but writes only 254, so a deeper frame could be read and then neither relayed nor answered.
MAX_DEPTH = 254


NUL_REFUSED = "strings may not contain the NUL (0x00) character"
# Numbers a stored JSON value may hold, in magnitude: what orjson writes as an integer.
NUMBER_LIMIT = 2**63


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


def canonical_bytes(value: Any) -> bytes:
    """``value`` encoded with its object keys sorted: equal for objects equal but for key order.
    Total: what orjson cannot write (an integer beyond 64 bits, stored before such numbers were
    refused) is written by the standard library instead."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except EncodeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr).encode()


def raw_json(encoded: bytes) -> Any:
    """Already-encoded JSON to embed as is in a document passed to ``dumps`` (no re-parse)."""
    return orjson.Fragment(encoded)


def _leaves(value: Any) -> Iterator[Any]:
    """Every key, string and number in ``value`` (parsed JSON), at any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def contains_nul(value: Any) -> bool:
    """Whether a string in ``value`` (parsed JSON), a key of an object at any depth included, holds
    the NUL character, which PostgreSQL's text and ``jsonb`` cannot hold."""
    return any(isinstance(item, str) and "\x00" in item for item in _leaves(value))


def json_refusal(value: Any, where: str) -> str | None:
    """Why ``value`` (parsed from a frame or a body, so no larger than one) cannot be stored as JSON
    on every backend, naming ``where``; None when it can. PostgreSQL's ``jsonb`` holds no NUL in a
    string or key (``\\u0000`` has no text form there) and no number that is not finite (Python's JSON
    reader takes ``NaN``; JSON has no such number), and hands a number as large as 1e20 back as an
    integer, which orjson cannot write (a frame carrying it could never be sent): refused everywhere,
    so SQLite answers alike."""
    for item in _leaves(value):
        if isinstance(item, str) and "\x00" in item:
            return f"{where}: {NUL_REFUSED}"
        if isinstance(item, float) and not math.isfinite(item):
            return f"{where}: numbers must be finite (JSON has no NaN or Infinity)"
        if isinstance(item, int | float) and not isinstance(item, bool) and abs(item) >= NUMBER_LIMIT:
            return f"{where}: numbers must lie within ±2**63 (a larger one cannot be written back as JSON here)"
    return None
