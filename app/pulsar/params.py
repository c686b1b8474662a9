"""Query parameters of the Pulsar paths, read at the handshake (docs/architecture.md 18.2).

Values arrive as strings; pydantic's lax mode reads Pulsar's spellings ("1000", "true"). A value
that cannot be read refuses the handshake with 400; a parameter Switchyard does not know is ignored,
as Pulsar ignores it.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self
from urllib.parse import parse_qs

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.broker.naming import topic_name_error


class QueryParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def from_query(cls, query_string: bytes) -> Self:
        """The parameters of a handshake's query string (the last value of a repeated name wins);
        raises ``ValidationError``."""
        query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
        values: dict[str, Any] = {name: found[-1] for name, found in query.items()}
        return cls.model_validate(values)


def params_problem(exc: ValidationError) -> str:
    """A short, client-facing summary of the parameters that could not be read."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "query"
        parts.append(f"{where}: {error['msg']}")
    return "bad query parameters: " + "; ".join(parts)


SubscriptionTypeName = Literal["Exclusive", "Failover", "Shared", "Key_Shared"]
# Pulsar's int and long parameters: a larger value is malformed there too.
INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
# Pulsar accepts a full topic name for deadLetterTopic (persistent://tenant/ns/topic); topics here
# are one namespace, so only its last part names the topic.
_FULL_TOPIC_NAME = re.compile(r"^(?:non-)?persistent://(?:[^/]*/)*")


class ConsumerParams(QueryParams):
    """``/ws/v2/consumer/...`` on a topic with Pulsar semantics (docs/architecture.md 18.2)."""

    subscriptionType: SubscriptionTypeName = "Exclusive"
    receiverQueueSize: int = Field(1000, ge=1, le=INT_MAX)
    ackTimeoutMillis: int = Field(0, ge=0, le=LONG_MAX)
    negativeAckRedeliveryDelay: int = Field(60_000, ge=0, le=INT_MAX)
    maxRedeliverCount: int = Field(0, ge=0, le=INT_MAX)
    deadLetterTopic: str | None = None
    pullMode: bool = False
    consumerName: str | None = Field(None, max_length=200)
    priorityLevel: int | None = Field(None, ge=0, le=INT_MAX)

    @field_validator("receiverQueueSize")
    @classmethod
    def _bounded_queue(cls, value: int) -> int:
        # Unacked messages in flight are what a connection holds in memory.
        limit: int = settings.UNACKED_PER_CONNECTION
        if value > limit:
            raise ValueError(f"must be at most {limit} (UNACKED_PER_CONNECTION)")
        return value

    @field_validator("deadLetterTopic")
    @classmethod
    def _topic_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        slug = _FULL_TOPIC_NAME.sub("", value)
        problem = topic_name_error(slug)
        if problem is not None:
            raise ValueError(problem)
        return slug

    def dead_letter_topic(self, topic: str, subscription: str) -> str:
        """The dead letter topic's name: the parameter, else Pulsar's ``<topic>-<subscription>-DLQ``."""
        return self.deadLetterTopic or f"{topic}-{subscription}-DLQ"


def consumer_problem(params: ConsumerParams, topic: str, subscription: str) -> str | None:
    """What makes a consumer's parameters unusable on ``topic`` / ``subscription``, or None: with
    dead letters on, the default dead letter name must be a topic name (a subscription name may
    hold '.' and ':', which topic names may not)."""
    if params.maxRedeliverCount == 0 or params.deadLetterTopic is not None:
        return None
    problem = topic_name_error(params.dead_letter_topic(topic, subscription))
    return None if problem is None else f"bad query parameters: deadLetterTopic: {problem}; name one"
