"""Workers and work requests (after debusine): the rows only. State changes go through
app/work/transitions.py, one guarded UPDATE each; nothing else writes ``status``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.expressions import CombinedExpression
from django.utils import timezone

from app.auth.models import Token
from app.work.scheduling import requirements_of, signature_of

WORKER_NAME_MAX_CHARS = 100

# Bounds of priority_base and of priority_adjustment: their sum, the effective priority the queue
# index holds, stays far inside a 32-bit integer (an overflow made every UPDATE of the row fail).
PRIORITY_LIMIT = 1_000_000
# Who may give a request a positive priority (app/work/submission.py), as debusine: others may only
# lower their own requests' priority.
MANAGE_PRIORITIES = "work.manage_workrequest_priorities"


class Via(models.TextChoices):
    """How a connected worker takes work: one way at a time (app/work/workers.py ``mark_connected``,
    app/work/reports.py ``mark_polled``), so no request is given to a session that does not know it."""

    SOCKET = "socket"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Session:
    """The session a request is assigned to: a socket's (``connected_at`` when it opened) or HTTP
    polling's (no time: the polls of a worker form one session until it is lost or a socket opens).
    ``assign`` gives work only while the worker row still holds this session."""

    via: Via
    connected_at: datetime | None = None

    def holds(self) -> Q:
        """SQL (on Worker): the worker is connected in this session."""
        at = Q(connected_at=self.connected_at) if self.connected_at is not None else Q(connected_at__isnull=False)
        return Q(connected_via=self.via) & at


class Worker(models.Model):
    """A machine that runs work requests. It authenticates with its own token (a ``Token`` of a
    dedicated inactive user, app/work/workers.py); disabling the token disables the worker."""

    name = models.CharField(max_length=WORKER_NAME_MAX_CHARS, unique=True)
    token = models.OneToOneField(Token, on_delete=models.CASCADE, related_name="worker")
    registered_at = models.DateTimeField(default=timezone.now, editable=False)
    # Set while a socket (or an HTTP poll within WORKER_LOST_AFTER_S) says the worker is there.
    connected_at = models.DateTimeField(null=True, blank=True)
    # Which way it is connected while connected_at is set.
    connected_via = models.CharField(max_length=6, choices=Via.choices, blank=True, default="")
    # Its last heartbeat, frame or poll: silence for WORKER_LOST_AFTER_S makes it lost.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # Set by admins; wins over what the worker reports, so an admin can pin or hide a capability.
    static_metadata = models.JSONField(default=dict, blank=True)
    # Reported by the worker itself (architecture, installed tools, ...).
    dynamic_metadata = models.JSONField(default=dict, blank=True)
    concurrency = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Work requests it may run at once."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def metadata(self) -> dict[str, Any]:
        """What the scheduler matches requirements against: the worker's report, admins' keys on top."""
        # Both are checked to be objects where they are written (app/work/workers.py, the admin); a
        # row written otherwise (a shell, an old version) counts as no metadata, so it matches nothing
        # that requires something rather than failing every get-next of the worker.
        return {**self.dynamic(), **self.static()}

    def static(self) -> dict[str, Any]:
        """Admins' metadata as an object; a row written around the checks reads as none."""
        return self.static_metadata if isinstance(self.static_metadata, dict) else {}

    def dynamic(self) -> dict[str, Any]:
        """The worker's reported metadata as an object; a row written around the checks reads as none."""
        return self.dynamic_metadata if isinstance(self.dynamic_metadata, dict) else {}


class Status(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"


class Result(models.TextChoices):
    NONE = "", "none"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


# Statuses a request never leaves.
FINAL = (Status.COMPLETED, Status.ABORTED)


def effective_priority() -> CombinedExpression:
    """The effective priority in SQL, as the scheduler orders by it and the queue index holds it."""
    return F("priority_base") + F("priority_adjustment")


class WorkRequest(models.Model):
    task_name = models.CharField(max_length=100)
    # Validated against the task's registered JSON schema when created (app/work/tasks.py); the
    # optional "requires" key holds the capabilities a worker must have (app/work/scheduling.py).
    task_data = models.JSONField(default=dict, blank=True)
    # scheduling.signature_of(its requires), set on save: the queue skips a signature a worker lacks.
    requirements_signature = models.CharField(max_length=64, blank=True, default="", editable=False)
    # The creator's priority; the adjustment is an admin's, so the two stay apart (as debusine).
    priority_base = models.IntegerField(
        default=0, validators=[MinValueValidator(-PRIORITY_LIMIT), MaxValueValidator(PRIORITY_LIMIT)]
    )
    priority_adjustment = models.IntegerField(
        default=0, validators=[MinValueValidator(-PRIORITY_LIMIT), MaxValueValidator(PRIORITY_LIMIT)]
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # Set only when completed; aborted requests have none.
    result = models.CharField(max_length=10, choices=Result.choices, default=Result.NONE, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    # When its worker confirmed it has it (a ``started`` or ``progress`` report over HTTP). A polling
    # worker whose ``next`` answer was lost is answered this request again (app/work/reports.py).
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="work_requests"
    )
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned")
    # Runs only once every one of these completed with success.
    dependencies = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="dependents")
    # How many times it was started: a request returned to pending after its worker was lost runs
    # again until WORK_REQUEST_MAX_ATTEMPTS.
    attempts = models.PositiveIntegerField(default=0)
    output_data = models.JSONField(null=True, blank=True)
    # The request this one retries (debusine's "supersedes"): one retry per request, by this unique key.
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="superseded_by"
    )
    # The dependency whose failure or abort ended this request without running it; retrying that
    # dependency retries this one too.
    cascaded_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="cascaded"
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("manage_workrequest_priorities", "Can give work requests a positive priority")]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority_base__gte=-PRIORITY_LIMIT, priority_base__lte=PRIORITY_LIMIT),
                name="work_priority_base_bounded",
            ),
            models.CheckConstraint(
                condition=Q(priority_adjustment__gte=-PRIORITY_LIMIT, priority_adjustment__lte=PRIORITY_LIMIT),
                name="work_priority_adjustment_bounded",
            ),
        ]
        indexes = [
            # The scheduler's queue: pending requests by effective priority, then age.
            models.Index(
                effective_priority().desc(), F("created_at").asc(), F("id").asc(),
                name="work_pending_queue", condition=Q(status=Status.PENDING),
            ),
            # A worker's running requests: its free slots, and what goes back when it is lost.
            models.Index(fields=["worker"], name="work_running_by_worker", condition=Q(status=Status.RUNNING)),
            # A principal's pending requests, counted against WORK_REQUESTS_PER_PRINCIPAL.
            models.Index(fields=["created_by"], name="work_pending_by_creator", condition=Q(status=Status.PENDING)),
            models.Index(fields=["status", "completed_at"], name="work_status_completed"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_name} ({self.status}{f' {self.result}' if self.result else ''})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.requirements_signature = signature_of(requirements_of(self.task_data))
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "task_data" in update_fields:
            kwargs["update_fields"] = {*update_fields, "requirements_signature"}
        super().save(*args, **kwargs)

    @property
    def priority(self) -> int:
        return self.priority_base + self.priority_adjustment
