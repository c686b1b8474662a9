"""CloudEvents 1.0: validating what ``emit`` is given, and the event as targets send it.

Attribute rules follow the spec (v1.0.2): required ``id``/``source``/``type`` non-empty,
extension names of 1-20 lower-case letters or digits, integers within 32 bits, ``data`` encoded
as ``datacontenttype`` says (JSON when it names JSON or is absent).
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app import codec

SPECVERSION = "1.0"
CORE_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "subject", "data", "data_base64"}
)
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_INT32 = (-(2**31), 2**31 - 1)
MAX_EXTENSIONS_CHARS = 16_384
# CloudEvents' partitioning extension: the ordering key travels with the event.
PARTITION_KEY = "partitionkey"
# Deterministic message ids for targets that deduplicate (own topics): one per source + id.
_MESSAGE_NAMESPACE = uuid.UUID("6f0e3a55-2f8a-4c1e-9c59-5f1f3b7f0a11")

Extension = str | int | bool
TargetName = Literal["topic", "rabbitmq", "redis"]


def is_json_type(content_type: str | None) -> bool:
    if content_type is None:
        return True
    base = content_type.split(";", 1)[0].strip().lower()
    return base in ("application/json", "text/json") or base.endswith("+json")


def is_text_type(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower().startswith("text/")


class EventIn(BaseModel):
    """One event as ``emit`` takes it."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    type: str = Field(min_length=1, max_length=255)
    source: str = Field(min_length=1, max_length=1024)
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=255)
    time: datetime | None = None
    subject: str | None = Field(default=None, min_length=1, max_length=1024)
    datacontenttype: str | None = Field(default=None, min_length=1, max_length=255)
    dataschema: str | None = Field(default=None, min_length=1, max_length=1024)
    data: Any = None
    extensions: dict[str, Extension] = Field(default_factory=dict)
    key: str | None = Field(default=None, min_length=1, max_length=255)
    target: TargetName | None = None
    destination: str = Field(default="", max_length=255)

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and timezone.is_naive(value):
            raise ValueError("time must be timezone-aware (RFC 3339 needs an offset)")
        return value

    @field_validator("extensions")
    @classmethod
    def _extensions(cls, value: dict[str, Extension]) -> dict[str, Extension]:
        for name, attr in value.items():
            if not _EXTENSION_NAME.fullmatch(name):
                raise ValueError(f"extension name {name!r}: 1-20 lower-case letters or digits")
            if name in CORE_ATTRIBUTES or name == PARTITION_KEY:
                raise ValueError(f"extension name {name!r} is reserved")
            if isinstance(attr, int) and not isinstance(attr, bool) and not _INT32[0] <= attr <= _INT32[1]:
                raise ValueError(f"extension {name!r}: integers must fit in 32 bits")
        if sum(len(name) + len(str(attr)) for name, attr in value.items()) > MAX_EXTENSIONS_CHARS:
            # Attributes travel as headers: RabbitMQ closes the connection on a header frame above
            # its frame_max (128 KiB), which would look like an outage on every retry.
            raise ValueError(f"extensions hold more than {MAX_EXTENSIONS_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _data(self) -> EventIn:
        encode_data(self.data, self.datacontenttype)
        return self


def encode_data(data: Any, content_type: str | None) -> tuple[bytes | None, str | None]:
    """``data`` as stored and sent, and the content type it is sent with. Raises ValueError."""
    if data is None:
        return None, content_type
    if isinstance(data, bytes | bytearray | memoryview):
        encoded, content_type = bytes(data), content_type or "application/octet-stream"
        if is_json_type(content_type):
            # The JSON format embeds JSON data as is: it must be JSON.
            try:
                codec.loads(encoded)
            except codec.DecodeError:
                raise ValueError(f"data is not JSON, as datacontenttype {content_type!r} says") from None
    elif isinstance(data, str) and not is_json_type(content_type):
        encoded = data.encode()
    elif is_json_type(content_type):
        try:
            encoded = codec.dumps_bytes(data)
        except TypeError as exc:
            raise ValueError(f"data is not JSON-serialisable: {exc}") from None
        content_type = content_type or "application/json"
    else:
        raise ValueError(f"data for datacontenttype {content_type!r} must be bytes or str")
    if len(encoded) > settings.OUTBOX_MAX_DATA_BYTES:
        raise ValueError(f"data is {len(encoded)} bytes, above OUTBOX_MAX_DATA_BYTES={settings.OUTBOX_MAX_DATA_BYTES}")
    return encoded, content_type


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Outbound:
    """A claimed event as the targets send it."""

    pk: int
    id: str
    source: str
    type: str
    time: datetime
    datacontenttype: str | None
    dataschema: str | None
    subject: str | None
    data: bytes | None
    key: str | None
    target: str
    destination: str
    extensions: dict[str, Extension] = field(default_factory=dict)

    @property
    def message_id(self) -> uuid.UUID:
        return uuid.uuid5(_MESSAGE_NAMESPACE, f"{self.source}\x00{self.id}")

    def attributes(self) -> dict[str, Extension]:
        """Context attributes with their types (time as RFC 3339 text), absent ones left out."""
        attrs: dict[str, Extension] = {
            "specversion": SPECVERSION, "id": self.id, "source": self.source, "type": self.type,
            "time": rfc3339(self.time),
        }
        for name in ("datacontenttype", "dataschema", "subject"):
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        attrs.update(self.extensions)
        if self.key is not None:
            attrs[PARTITION_KEY] = self.key
        return attrs

    def string_attributes(self) -> dict[str, str]:
        """Attributes in their canonical string form (binary bindings, headers, stream fields)."""
        return {
            name: ("true" if value else "false") if isinstance(value, bool) else str(value)
            for name, value in self.attributes().items()
        }

    def structured(self) -> bytes:
        """The event in the JSON format (``application/cloudevents+json``)."""
        document: dict[str, Any] = dict(self.attributes())
        if self.data is not None:
            if is_json_type(self.datacontenttype):
                document["data"] = codec.raw_json(self.data)
            elif is_text_type(self.datacontenttype) and (text := _utf8(self.data)) is not None:
                document["data"] = text
            else:
                document["data_base64"] = base64.b64encode(self.data).decode()
        return codec.dumps_bytes(document)


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None
