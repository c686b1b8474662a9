"""How a replica reads a payload's ``retries`` and ``expires`` (app/cqrs/apply.py, app/cqrs/payload.py), as
django-cqrs's ``TransportPayload.from_message`` does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from app.cqrs.apply import parse, receive
from app.cqrs.payload import TransportPayload
from tests.protocol import unique

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def body(**changes: Any) -> dict[str, Any]:
    """A django-cqrs payload for the test app's ``test_event`` replica, with ``changes`` set and the keys
    listed in ``drop`` removed."""
    dct = {"signal_type": "SAVE", "cqrs_id": "test_event", "instance_pk": 1, "previous_data": None,
           "instance_data": {"id": 1, "key": unique("wire"), "cqrs_revision": 0, "cqrs_updated": NOW.isoformat()},
           "correlation_id": None, "retries": 0, "expires": None, "meta": None}
    for key in changes.pop("drop", ()):
        del dct[key]
    return dct | changes


def parsed(dct: dict[str, Any]) -> TransportPayload:
    payload = parse(json.dumps(dct).encode(), NOW)
    assert isinstance(payload, TransportPayload), payload
    return payload


def test_null_retries_count_as_zero() -> None:
    """``"retries": null`` is 0 (django-cqrs reads ``retries or 0``): a failure is retry 1, not a refusal."""
    dct = body(retries=None)
    dct["instance_data"]["fail"] = True
    verdict = receive(json.dumps(dct).encode(), now=NOW)
    assert verdict.action == "retry" and verdict.payload is not None and verdict.payload.retries == 1


def test_missing_expires_expires_after_the_message_ttl(settings: Any) -> None:
    """A payload without the ``expires`` key expires CQRS_MESSAGE_TTL_S after it is read (django-cqrs's default)."""
    settings.CQRS_MESSAGE_TTL_S = 60
    assert parsed(body(drop=["expires"])).expires == NOW + timedelta(seconds=60)


def test_missing_expires_never_expires_with_no_message_ttl(settings: Any) -> None:
    """With CQRS_MESSAGE_TTL_S = 0 (django-cqrs's None) a payload without ``expires`` never expires."""
    settings.CQRS_MESSAGE_TTL_S = 0
    assert parsed(body(drop=["expires"])).expires is None


def test_null_expires_never_expires(settings: Any) -> None:
    """``"expires": null`` is "never", whatever the TTL."""
    settings.CQRS_MESSAGE_TTL_S = 60
    assert parsed(body()).expires is None


def test_retried_payload_carries_the_expiry_it_was_given(settings: Any) -> None:
    """A payload without ``expires`` is retried with the expiry computed on first reading (as django-cqrs
    republishes it), so its retries cannot outlive the TTL."""
    settings.CQRS_MESSAGE_TTL_S = 60
    dct = body(drop=["expires"])
    dct["instance_data"]["fail"] = True
    verdict = receive(json.dumps(dct).encode(), now=NOW)
    assert verdict.action == "retry" and verdict.payload is not None
    assert json.loads(verdict.payload.model_dump_json())["expires"] == "2025-06-01T12:01:00+00:00"
