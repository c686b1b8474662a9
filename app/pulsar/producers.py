"""Producers on the Pulsar paths: their query parameters and the lease that keeps a
``producerName`` unique (docs/architecture.md 18.2, 18.4).

Every parameter of Pulsar's producer endpoint is read, so a malformed value refuses the handshake
with 400 as Pulsar does; most have no effect here (the README's table says which, and why).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Literal

from pydantic import Field, field_validator

from app import codec
from app.broker.announcements import PROCESS_ID
from app.leases.models import Lease
from app.pulsar.params import JavaBool, JavaInt, QueryParams

PRODUCER_NAME_MAX_CHARS = 256
_LEASE_NAME_MAX: int = Lease._meta.get_field("name").max_length or 64
_JavaInt = Annotated[JavaInt, Field(ge=0, le=2**31 - 1)]
_JavaLong = Annotated[JavaInt, Field(ge=-(2**63), le=2**63 - 1)]


class ProducerParams(QueryParams):
    """The query parameters of ``/ws/v2/producer/...`` (Pulsar's names and defaults)."""

    # Unique among the topic's live producers, across processes (a lease); "" is no name.
    producerName: Annotated[str, Field(max_length=PRODUCER_NAME_MAX_CHARS)] | None = None
    # No effect: the ack comes after the commit, or an error ack instead.
    sendTimeoutMillis: _JavaInt = 30_000
    # No effect: the group-commit writer batches whatever arrives during a commit anyway.
    batchingEnabled: JavaBool = False
    batchingMaxMessages: _JavaInt = 1000
    batchingMaxPublishDelay: Annotated[JavaInt, Field(ge=0, le=2**63 - 1)] = 10
    # No effect: the bound on a producer is SEND_QUEUE_FRAMES and PRODUCER_PENDING_BYTES.
    maxPendingMessages: _JavaInt = 1000
    # No effect: topics have no partitions, frames no compression or encryption.
    messageRoutingMode: Literal["SinglePartition", "RoundRobinPartition"] | None = None
    compressionType: Literal["NONE", "LZ4", "ZLIB", "ZSTD", "SNAPPY"] | None = None
    hashingScheme: Literal["JavaStringHash", "Murmur3_32Hash"] | None = None
    initialSequenceId: _JavaLong | None = None
    encryptionKeys: str | None = None

    @field_validator("producerName", mode="before")
    @classmethod
    def _blank_is_no_name(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("producerName")
    @classmethod
    def _storable_name(cls, value: str | None) -> str | None:
        # The name is held in a lease row, and PostgreSQL's text holds no NUL (the lease's insert failed:
        # a 503 and a traceback per handshake): refused with 400 on every backend.
        if value is not None and "\x00" in value:
            raise ValueError(codec.NUL_REFUSED)
        return value


def producer_lease_name(topic_id: int, producer_name: str) -> str:
    """The lease a named producer holds while it lives: ``producer:<topic id>:<name>``, or with a
    digest of the name where that would not fit the lease's name column (or could be taken for
    one: names starting with ``#``)."""
    plain = f"producer:{topic_id}:{producer_name}"
    if len(plain) <= _LEASE_NAME_MAX and not producer_name.startswith("#"):
        return plain
    digest = hashlib.sha256(producer_name.encode()).hexdigest()[:32]
    return f"producer:{topic_id}:#{digest}"


def new_lease_holder() -> str:
    """Who holds a producer's lease: this process and one connection of it."""
    return f"{PROCESS_ID}:{uuid.uuid4().hex}"


def renew_interval_s(lease_s: float) -> float:
    """How often a live producer renews its lease: three times per term, so one slow renewal
    does not lose it."""
    return lease_s / 3
