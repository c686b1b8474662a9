"""Topics, messages and per-principal delivery state."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from app.availability.rules import Availability, answered_q, availability, unknown_q
from app.broker.policy import StorePolicy, effective_policy

TOPIC_PATTERN = r"[-_A-Za-z0-9]+"
SUBSCRIPTION_PATTERN = r"[-.:_A-Za-z0-9]+"
# Producers send availability answers here; it can never be a topic of its own.
STATUS_PING_TOPIC = "status-ping"
# Names with websocket endpoints of their own (/ws/status-ping, /ws/status/, /ws/workers/,
# /ws/work-requests/).
RESERVED_TOPICS = frozenset({STATUS_PING_TOPIC, "status", "workers", "work-requests"})


def validate_not_reserved(slug: str) -> None:
    if slug in RESERVED_TOPICS:
        raise ValidationError(f"{slug!r} is reserved")


def validate_name_length(slug: str) -> None:
    # The setting, not the column width: clients cannot reach a longer name (admin forms and
    # dasf_topic validate with this).
    if len(slug) > settings.TOPIC_NAME_MAX_CHARS:
        raise ValidationError(f"longer than TOPIC_NAME_MAX_CHARS ({settings.TOPIC_NAME_MAX_CHARS})")


POLICY_CHOICES = [(p.value, p.value) for p in StorePolicy]


class TopicQuerySet(models.QuerySet["Topic"]):
    def source_topics(self) -> TopicQuerySet:
        return self.filter(response_for__isnull=True)

    def response_topics(self) -> TopicQuerySet:
        return self.filter(response_for__isnull=False)

    # Availability filters: the rule of app.availability.rules, in SQL. Defaults from settings.

    def online(self, now: datetime | None = None, **rule: float) -> TopicQuerySet:
        at, window, grace, interval = _availability_args(now, rule)
        return self.exclude(unknown_q(at, window_s=window)).filter(
            answered_q(at, grace_s=grace, interval_s=interval)
        )

    def offline(self, now: datetime | None = None, **rule: float) -> TopicQuerySet:
        at, window, grace, interval = _availability_args(now, rule)
        return self.exclude(unknown_q(at, window_s=window)).exclude(
            answered_q(at, grace_s=grace, interval_s=interval)
        )

    def unknown(self, now: datetime | None = None, **rule: float) -> TopicQuerySet:
        at, window, _, _ = _availability_args(now, rule)
        return self.filter(unknown_q(at, window_s=window))


def _availability_args(now: datetime | None, rule: dict[str, float]) -> tuple[datetime, float, float, float]:
    """``now`` and the rule's settings (window_s, grace_s, interval_s), defaults from settings."""
    return (
        now or timezone.now(),
        rule.get("window_s", settings.AVAILABILITY_WINDOW_S),
        rule.get("grace_s", settings.PONG_GRACE_S),
        rule.get("interval_s", settings.PING_INTERVAL_S),
    )


class Topic(models.Model):
    slug = models.CharField(
        max_length=200,
        unique=True,
        validators=[
            RegexValidator(rf"^{TOPIC_PATTERN}$", "letters, digits, '-' and '_' only"),
            validate_not_reserved,
            validate_name_length,
        ],
    )
    is_public = models.BooleanField(default=False, help_text="Everyone may publish.")
    store_messages = models.CharField(
        max_length=16, choices=POLICY_CHOICES, null=True, blank=True, help_text="Empty = server default."
    )
    supports_dasf = models.BooleanField(default=True, help_text="Consumers answer DASF ping / api_info.")
    response_for = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="response_topics"
    )
    last_ping = models.DateTimeField(null=True, blank=True)
    last_pong = models.DateTimeField(null=True, blank=True)
    garbage_collect_on = models.DateTimeField(null=True, blank=True)
    api_info = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # Highest sequence handed out; rows lock it while allocating so processes never collide.
    last_sequence = models.BigIntegerField(default=0, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    # The principal whose message created the topic (auto-create, response topic), counted against
    # its limits; empty for topics an admin or the outbox made.
    created_by = models.CharField(max_length=64, blank=True, default="", db_index=True, editable=False)

    objects = TopicQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("can_produce", "Can publish messages to the topic"),
            ("can_consume", "Can consume messages of the topic"),
            ("can_view_status", "Can view the availability of the topic"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_response_topic(self) -> bool:
        return self.response_for_id is not None

    @property
    def policy(self) -> StorePolicy:
        return effective_policy(self.store_messages, is_response_topic=self.is_response_topic)

    def availability(self, now: datetime | None = None) -> Availability:
        if not self.supports_dasf:
            return Availability.UNKNOWN
        return availability(
            now or timezone.now(), self.last_ping, self.last_pong,
            window_s=settings.AVAILABILITY_WINDOW_S, grace_s=settings.PONG_GRACE_S,
            interval_s=settings.PING_INTERVAL_S,
        )


class Message(models.Model):
    message_id = models.UUIDField(default=uuid.uuid4)
    # Every index is written for every stored message: the topic's lookups use the (topic, sequence)
    # constraint's index, and the two nullable references are indexed only where set (for the
    # SET_NULL of a deleted user or topic), which most messages are not.
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="messages", db_index=False)
    sequence = models.BigIntegerField()
    producer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_index=False,
    )
    producer_principal = models.CharField(max_length=64)
    properties = models.JSONField(default=dict, blank=True)
    payload = models.TextField(null=True, blank=True)
    context = models.JSONField(null=True, blank=True)
    publish_time = models.DateTimeField()
    # The delivery frame exactly as live consumers got it; replay adds only redeliveryCount.
    frame = models.TextField()
    response_topic = models.ForeignKey(
        Topic, null=True, blank=True, on_delete=models.SET_NULL, related_name="source_messages", db_index=False
    )
    # Pulsar's delayed delivery (``deliverAt`` / ``deliverAfterMs``): Shared and Key_Shared
    # subscriptions hold the message back until then; everyone else gets it at once.
    deliver_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["topic", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["topic", "sequence"], name="message_topic_sequence"),
            models.UniqueConstraint(fields=["topic", "message_id"], name="message_topic_message_id"),
        ]
        # Held delayed messages are looked up by due time (app.pulsar.services.due_messages).
        indexes = [
            models.Index(fields=["topic", "deliver_at"], name="message_delayed",
                         condition=models.Q(deliver_at__isnull=False)),
            models.Index(fields=["producer"], name="message_producer", condition=models.Q(producer__isnull=False)),
            models.Index(fields=["response_topic"], name="message_response_topic",
                         condition=models.Q(response_topic__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.topic_id}#{self.sequence} {self.message_id}"

    @property
    def message_type(self) -> Any:
        return self.properties.get("messageType") if isinstance(self.properties, dict) else None


class Delivery(models.Model):
    """What one consuming principal did with one stored message."""

    # Looked up by message through the (message, principal) constraint's index.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    principal = models.CharField(max_length=64)
    redelivery_count = models.PositiveIntegerField(default=0)
    acked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["message", "principal"], name="delivery_message_principal")
        ]
        indexes = [models.Index(fields=["principal", "acked_at"])]

    def __str__(self) -> str:
        return f"{self.message_id} -> {self.principal}"


class Announcement(models.Model):
    """A change every server process must apply to its open connections and caches.

    Written in the transaction that makes the change, whoever makes it (a server, the admin, a
    management command, a shell), and read by each server's announcement loop: the channel layer
    alone would miss changes made outside a server, and there is none without Redis.
    """

    RIGHTS = "rights"  # a topic was created, changed or deleted, or rights on it changed
    REVOKED = "revoked"  # a token was disabled or deleted, or a user deactivated or deleted
    KINDS = [(RIGHTS, RIGHTS), (REVOKED, REVOKED)]

    kind = models.CharField(max_length=16, choices=KINDS)
    slug = models.CharField(max_length=200, blank=True)
    # For RIGHTS: whether the topic exists after the change, and whether it is a response topic
    # (which no status viewer lists: their churn wakes none of them).
    exists = models.BooleanField(default=True)
    response = models.BooleanField(default=False)
    token_id = models.BigIntegerField(null=True, blank=True)
    principal = models.CharField(max_length=64, blank=True)
    # The server process that made the change and applied it at once ("" for other processes).
    origin = models.CharField(max_length=32, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.slug or self.token_id or self.principal}"
