"""Checks of publish frames under Pulsar semantics (docs/architecture.md 18.2 and 18.4)."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

# Pulsar's websocket error codes (its documentation's table); a refused publish is acked with
# ``send-error:<code>``.
DESERIALIZE_ERROR = 3
PAYLOAD_ENCODING_ERROR = 7
OTHER_ERROR = 8

# Delayed delivery: ``deliverAt`` (epoch milliseconds) and ``deliverAfterMs`` (milliseconds from
# now), Java longs in Pulsar's frame; a value of 0 or less asks for no delay.
DELIVER_AT = "deliverAt"
DELIVER_AFTER_MS = "deliverAfterMs"
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
# Later times are held until then: a delay that long never ends in practice.
_LATEST = datetime(9999, 12, 31, tzinfo=UTC)


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
DELAY_NOT_STORED = PublishError(
    OTHER_ERROR, "delayed delivery (deliverAt, deliverAfterMs) needs a topic that stores messages; "
    "this topic's store policy is disabled",
)


def _invalid_delay(name: str) -> PublishError:
    return PublishError(DESERIALIZE_ERROR, f"Failed to deserialize from JSON: {name} must be an integer (a Java long)")


def publish_frame_error(raw: dict[str, Any], *, stores: bool = True) -> PublishError | None:
    """What is wrong with a publish frame under Pulsar semantics, or None.

    ``payload`` is required and must be standard base64 with padding (``""`` is valid); ``key``,
    when present, must be a string; ``deliverAt`` and ``deliverAfterMs``, when present, must be
    integers, and a delay (a value above 0) needs a topic that ``stores``: the held message waits
    in the database. The payload is decoded once, only to check it: what is stored and delivered
    is the text as received."""
    payload = raw.get("payload")
    if not isinstance(payload, str):
        return INVALID_PAYLOAD
    try:
        base64.b64decode(payload, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII string
        return INVALID_PAYLOAD
    if "key" in raw and not isinstance(raw["key"], str):
        return INVALID_KEY
    delayed = False
    for name in (DELIVER_AT, DELIVER_AFTER_MS):
        if name in raw:
            value = raw[name]
            if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:  # bool is no integer here
                return _invalid_delay(name)
            delayed = delayed or value > 0
    if delayed and not stores:
        return DELAY_NOT_STORED
    return None


def delivery_time(raw: dict[str, Any], now: datetime) -> datetime | None:
    """When a checked publish frame asks to be delivered (None: at once). ``deliverAfterMs`` wins
    over ``deliverAt`` when both ask for a delay; a time past year 9999 is held until then."""
    after = raw.get(DELIVER_AFTER_MS, 0)
    if after > 0:
        try:
            return min(now + timedelta(milliseconds=after), _LATEST)
        except OverflowError:
            return _LATEST
    at = raw.get(DELIVER_AT, 0)
    if at > 0:
        return datetime.fromtimestamp(at / 1000, UTC) if at < _LATEST.timestamp() * 1000 else _LATEST
    return None
