"""The outbox table: one row per CloudEvents 1.0 event, written in the emitting transaction."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Status(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    PUBLISHED = "published"
    RETRY = "retry"
    FAILED = "failed"


# Statuses a relay may claim from (processing only once its claim expired).
CLAIMABLE = (Status.PENDING, Status.RETRY, Status.PROCESSING)


class OutboxEvent(models.Model):
    # CloudEvents 1.0 context attributes (https://github.com/cloudevents/spec, v1.0.2).
    specversion = models.CharField(max_length=8, default="1.0")
    event_id = models.CharField("id", max_length=255)
    source = models.CharField(max_length=1024)
    type = models.CharField(max_length=255)
    time = models.DateTimeField(default=timezone.now)
    datacontenttype = models.CharField(max_length=255, null=True, blank=True)
    dataschema = models.CharField(max_length=1024, null=True, blank=True)
    subject = models.CharField(max_length=1024, null=True, blank=True)
    # ``data`` encoded as datacontenttype says (JSON text for JSON types); None when absent.
    data = models.BinaryField(null=True, blank=True)
    extensions = models.JSONField(default=dict, blank=True)

    # Routing and ordering: events of one key are published in id order.
    key = models.CharField(max_length=255, null=True, blank=True, help_text="Ordering key.")
    target = models.CharField(max_length=16)
    destination = models.CharField(
        max_length=255, blank=True, default="",
        help_text="Routing key, stream or topic; empty = the target's default.",
    )

    # Delivery state.
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    published_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=128, null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # CloudEvents: source + id identify an event; emitting one twice is refused.
            models.UniqueConstraint(fields=["source", "event_id"], name="outbox_source_id_unique"),
        ]
        indexes = [
            # The claim scans unsettled rows in id order: published and failed rows (the
            # million that pile up) are not in this index.
            models.Index(
                fields=["id"], name="outbox_claimable",
                condition=Q(status__in=[Status.PENDING, Status.RETRY, Status.PROCESSING]),
            ),
            # "Is an earlier event of this key still open?" for each claim candidate.
            models.Index(fields=["key", "id"], name="outbox_open_by_key", condition=~Q(status=Status.PUBLISHED)),
            models.Index(fields=["published_at"], name="outbox_prunable", condition=Q(status=Status.PUBLISHED)),
            models.Index(fields=["status", "id"], name="outbox_status"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} ({self.status})"
