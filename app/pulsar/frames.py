"""Checks of publish frames under Pulsar semantics (docs/architecture.md 18.2 and 18.4)."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

# Pulsar's websocket error codes (its documentation's table); a refused publish is acked with
# ``send-error:<code>``.
DESERIALIZE_ERROR = 3
PAYLOAD_ENCODING_ERROR = 7


@dataclasses.dataclass(frozen=True, slots=True)
class PublishError:
    code: int
    message: str

    @property
    def result(self) -> str:
        return f"send-error:{self.code}"


INVALID_PAYLOAD = PublishError(PAYLOAD_ENCODING_ERROR, "Invalid payload encoding")
# Pulsar reads a publish frame into a typed object; a field of the wrong type fails there (code 3).
INVALID_KEY = PublishError(DESERIALIZE_ERROR, "Failed to deserialize from JSON: key must be a string")


def publish_frame_error(raw: dict[str, Any]) -> PublishError | None:
    """What is wrong with a publish frame under Pulsar semantics, or None.

    ``payload`` is required and must be standard base64 with padding (``""`` is valid); ``key``,
    when present, must be a string. The payload is decoded once, only to check it: what is stored
    and delivered is the text as received."""
    payload = raw.get("payload")
    if not isinstance(payload, str):
        return INVALID_PAYLOAD
    try:
        base64.b64decode(payload, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII string
        return INVALID_PAYLOAD
    if "key" in raw and not isinstance(raw["key"], str):
        return INVALID_KEY
    return None
