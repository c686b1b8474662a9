"""The plain decisions behind the Pulsar paths: which connections get Pulsar semantics, and what a
publish frame must look like under them (docs/architecture.md 18.1, 18.2)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from app.pulsar.frames import INVALID_KEY, INVALID_PAYLOAD, publish_frame_error
from app.pulsar.semantics import PathShape, pulsar_semantics


@pytest.mark.parametrize(
    ("shape", "supports_dasf", "expected"),
    [
        (PathShape.DASF, True, False),
        (PathShape.DASF, False, False),
        (PathShape.PULSAR, True, False),
        (PathShape.PULSAR, False, True),
    ],
)
def test_pulsar_semantics_table(shape: PathShape, supports_dasf: bool, expected: bool) -> None:
    """Only a non-DASF topic on a /ws/v2/ path gets Pulsar semantics."""
    assert pulsar_semantics(shape, supports_dasf) is expected


@pytest.mark.parametrize("payload", ["", base64.b64encode(b"hello").decode(), "QQ==", "AAAA"],
                         ids=["empty", "text", "padded", "no-padding-needed"])
def test_valid_base64_payload_accepted(payload: str) -> None:
    """Standard base64 with padding, or the empty string, passes."""
    assert publish_frame_error({"payload": payload}) is None


@pytest.mark.parametrize("payload", ["not base64!", "QQ", "QQ=", "QQ===", "Q Q==", "QQ==\n", "-_-_", "€€€€",
                                     "QQ==QQ=="],
                         ids=["text", "unpadded", "short-padding", "over-padded", "space", "newline",
                              "urlsafe", "non-ascii", "data-after-padding"])
def test_invalid_base64_payload_refused(payload: str) -> None:
    """A payload that is not strict standard base64 is Pulsar's invalid payload encoding (code 7)."""
    error = publish_frame_error({"payload": payload})
    assert error is INVALID_PAYLOAD
    assert error.result == "send-error:7" and error.message == "Invalid payload encoding"


@pytest.mark.parametrize("payload", [None, 5, ["QQ=="], {"a": "QQ=="}], ids=["null", "number", "list", "object"])
def test_payload_not_a_string_refused(payload: Any) -> None:
    """A payload that is not a string is an invalid payload encoding too."""
    assert publish_frame_error({"payload": payload}) is INVALID_PAYLOAD


def test_missing_payload_refused() -> None:
    """A publish frame without a payload is an invalid payload encoding."""
    assert publish_frame_error({"properties": {}, "context": 1}) is INVALID_PAYLOAD


@pytest.mark.parametrize("key", [5, None, ["k"], {"k": 1}, True], ids=["number", "null", "list", "object", "bool"])
def test_key_not_a_string_refused(key: Any) -> None:
    """A key that is not a string cannot be deserialised (Pulsar's code 3)."""
    error = publish_frame_error({"payload": "", "key": key})
    assert error is INVALID_KEY
    assert error.result == "send-error:3" and "key" in error.message


def test_string_key_accepted() -> None:
    """A string key (the empty one too) passes."""
    assert publish_frame_error({"payload": "QQ==", "key": ""}) is None
    assert publish_frame_error({"payload": "QQ==", "key": "k1"}) is None


def test_payload_checked_before_key() -> None:
    """With both wrong, the payload error is reported (the one every Pulsar client can hit)."""
    assert publish_frame_error({"payload": "!", "key": 5}) is INVALID_PAYLOAD
