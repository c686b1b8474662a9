"""The CQRS message, exactly as django-cqrs (3.x) puts it on the wire (its ``TransportPayload``).

A master's change becomes one JSON object; its replicas apply it. Field names and meanings are
django-cqrs's, so either side may be django-cqrs itself:

- ``signal_type``: ``SAVE`` (created or updated), ``DELETE``, ``SYNC`` (re-sent on demand);
- ``cqrs_id``: the model's replication name (its ``CQRS_ID``), also the RabbitMQ routing key;
- ``instance_data``: the serialised instance, with ``cqrs_revision`` and ``cqrs_updated`` inside;
- ``instance_pk``: the primary key; ``previous_data``: old values of ``CQRS_TRACKED_FIELDS`` (or null);
- ``correlation_id``, ``retries`` (consumer-side attempts so far; null or missing is 0, as django-cqrs
  reads it), ``expires`` (ISO time without microseconds, or null for never; a replica gives a payload
  without the key its own default, app/cqrs/apply.py), ``meta`` (free-form, or null).
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator


class SignalType(enum.StrEnum):
    SAVE = "SAVE"
    DELETE = "DELETE"
    SYNC = "SYNC"


class TransportPayload(BaseModel):
    # django-cqrs ignores keys it does not know; so do we (a newer master may add some).
    model_config = ConfigDict(extra="ignore")

    signal_type: SignalType
    cqrs_id: str = Field(min_length=1)
    instance_data: dict[str, Any]
    instance_pk: Any = None
    previous_data: dict[str, Any] | None = None
    correlation_id: Any = None
    retries: int = Field(0, ge=0)
    expires: datetime | None = None
    meta: dict[str, Any] | None = None

    @field_validator("retries", mode="before")
    @classmethod
    def _retries(cls, value: Any) -> Any:
        # django-cqrs reads ``dct.get("retries") or 0``: a master that writes null means none yet.
        return 0 if value is None else value

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # A master with USE_TZ=False writes a naive time; django-cqrs's masters mean UTC by it.
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @field_serializer("expires")
    def _expires(self, value: datetime | None) -> str | None:
        # As django-cqrs writes it: seconds precision, ISO 8601 with the offset.
        return None if value is None else value.replace(microsecond=0).isoformat()

    def is_expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now


def read_body(body: bytes) -> dict[str, Any] | str:
    """The JSON object in a received body (a message, a dead letter, a dump line), or why there is
    none. A body over ``CQRS_MAX_BODY_BYTES`` is not parsed (parsed JSON takes tens of times its size);
    ``NaN`` and ``Infinity`` are no JSON (Python's parser takes them; django-cqrs's masters never write
    them, and a payload written back would turn them into null); a body nested deeper than Python's
    parser goes is refused, not raised."""
    limit: int = settings.CQRS_MAX_BODY_BYTES
    if len(body) > limit:
        return f"body over CQRS_MAX_BODY_BYTES ({len(body)} > {limit} bytes)"
    try:
        raw = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        return "body nested too deeply"
    except ValueError as exc:
        return f"body is not JSON ({exc})"
    if not isinstance(raw, dict):
        return "body is not a JSON object"
    return raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
