"""The one JSON codec for frames and stored frames (orjson)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

DecodeError = orjson.JSONDecodeError


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
