"""Pulsar subscriptions: a durable cursor per (topic, name) (docs/architecture.md 18.3)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from app.broker.models import Message, Topic

# The longest subscription name (its column's length): a longer one is refused at the handshake.
SUBSCRIPTION_NAME_MAX_CHARS = 200


class SubscriptionType(models.TextChoices):
    EXCLUSIVE = "Exclusive"
    FAILOVER = "Failover"
    SHARED = "Shared"
    KEY_SHARED = "Key_Shared"


class Subscription(models.Model):
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="subscriptions")
    name = models.CharField(max_length=SUBSCRIPTION_NAME_MAX_CHARS)
    # The type of its consumers (they all have one; another type is refused while any is attached).
    type = models.CharField(max_length=16, choices=SubscriptionType.choices, default=SubscriptionType.EXCLUSIVE)
    # The topic's last_sequence when it was created (Pulsar's default initial position, latest): the
    # messages above it belong to the subscription.
    start_sequence = models.BigIntegerField()
    # Every stored message of the topic up to it is acked (or not the subscription's).
    acked_through = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=64, blank=True, default="")
    # Moved by its consumers; SUBSCRIPTION_TTL_S deletes a subscription idle that long.
    last_active = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["topic", "name"]
        constraints = [models.UniqueConstraint(fields=["topic", "name"], name="subscription_topic_name")]

    def __str__(self) -> str:
        return f"{self.topic_id}/{self.name}"


class SubscriptionMessage(models.Model):
    """What one subscription did with one stored message above its acked_through."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="messages")
    # No database constraint: the cache policy's ack deletes messages in one statement without
    # looking for these rows (the hot path of DASF topics). A row left behind is harmless (every
    # query starts from the stored messages) and goes when the cursor passes its sequence.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, db_constraint=False, related_name="+")
    # The message's sequence, so rows the cursor passed go in one range delete.
    sequence = models.BigIntegerField()
    redelivery_count = models.PositiveIntegerField(default=0)
    acked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscription", "message"], name="subscription_message")
        ]
        indexes = [models.Index(fields=["subscription", "sequence"])]

    def __str__(self) -> str:
        return f"{self.subscription_id} {self.message_id}"


class Release(models.Model):
    """Messages of a topic to which the removal rule is applied again, because a subscription that
    held them was deleted. Worked off in pages (services.release_page)."""

    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="+")
    # The messages with after_sequence < sequence <= through_sequence.
    after_sequence = models.BigIntegerField()
    through_sequence = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.topic_id} ({self.after_sequence}, {self.through_sequence}]"
