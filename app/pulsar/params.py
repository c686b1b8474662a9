"""Query parameters of the Pulsar paths, read at the handshake (docs/architecture.md 18.2).

Values arrive as strings and are read as Pulsar's websocket service (Java) reads them: an int or long
is an optional '-' and ASCII digits (``JavaInt``: no "1.0", " 5 " or "1_000"), a boolean is true when
it is "true" in any case and false otherwise (``JavaBool``, Java's ``Boolean.parseBoolean``). A value
that cannot be read refuses the handshake with 400; a parameter Switchyard does not know is ignored,
as Pulsar ignores it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qs

from django.conf import settings
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from app.broker.naming import shown, topic_name_error
from app.pulsar.models import SUBSCRIPTION_NAME_MAX_CHARS

_JAVA_INTEGER = re.compile(r"-?[0-9]+")


def _java_integer(value: object) -> object:
    if isinstance(value, str):
        if not _JAVA_INTEGER.fullmatch(value):
            raise ValueError("must be an integer (an optional '-' and digits)")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _java_boolean(value: object) -> object:
    if isinstance(value, str):
        return value.lower() == "true"
    return value


# The int and long parameters of every Pulsar path (bounds are per field).
JavaInt = Annotated[int, BeforeValidator(_java_integer)]
# The boolean parameters of every Pulsar path: "true" in any case is true, anything else false.
JavaBool = Annotated[bool, BeforeValidator(_java_boolean)]


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
    receiverQueueSize: JavaInt = Field(1000, ge=1, le=INT_MAX)
    ackTimeoutMillis: JavaInt = Field(0, ge=0, le=LONG_MAX)
    negativeAckRedeliveryDelay: JavaInt = Field(60_000, ge=0, le=INT_MAX)
    maxRedeliverCount: JavaInt = Field(0, ge=0, le=INT_MAX)
    deadLetterTopic: str | None = None
    pullMode: JavaBool = False
    consumerName: str | None = Field(None, max_length=200)
    priorityLevel: JavaInt | None = Field(None, ge=0, le=INT_MAX)

    @field_validator("receiverQueueSize")
    @classmethod
    def _bounded_queue(cls, value: int) -> int:
        # Unacked messages in flight are what a connection holds in memory.
        limit: int = settings.UNACKED_PER_CONNECTION
        if value > limit:
            raise ValueError(f"must be at most {limit} (UNACKED_PER_CONNECTION)")
        return value

    @field_validator("ackTimeoutMillis")
    @classmethod
    def _ack_timeout_floor(cls, value: int) -> int:
        # Pulsar refuses ack timeouts under a second: each one is a redelivery of every unacked message.
        floor: int = settings.MIN_ACK_TIMEOUT_MS
        if 0 < value < floor:
            raise ValueError(f"must be 0 (off) or at least {floor} ms (MIN_ACK_TIMEOUT_MS)")
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


def subscription_name_problem(name: str) -> str | None:
    """What makes ``name`` (from the URL) no subscription name, or None."""
    if not name:
        return "empty subscription name"
    if len(name) > SUBSCRIPTION_NAME_MAX_CHARS:
        return f"subscription name {shown(name)} is longer than {SUBSCRIPTION_NAME_MAX_CHARS} characters"
    return None


def consumer_problem(params: ConsumerParams, topic: str, subscription: str) -> str | None:
    """What makes a consumer's parameters unusable on ``topic`` / ``subscription``, or None: the dead
    letter topic may not be the topic itself (each dead letter would be redelivered to the
    subscription, again and again, stored anew each time); with dead letters on, the default dead
    letter name must be a topic name (a subscription name may hold '.' and ':', which topic names
    may not)."""
    if params.deadLetterTopic == topic:
        return "bad query parameters: deadLetterTopic: is the subscribed topic itself"
    if params.maxRedeliverCount == 0 or params.deadLetterTopic is not None:
        return None
    problem = topic_name_error(params.dead_letter_topic(topic, subscription))
    return None if problem is None else f"bad query parameters: deadLetterTopic: {problem}; name one"
