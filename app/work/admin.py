"""Workers and work requests in the admin: lists with filters, and the actions abort, retry and
disable (or enable) a worker. Rows change only through app/work's guarded transitions and
column-wise updates: an admin form saved while a worker reports must not write back what it read."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from app.work import transitions, workers
from app.work.models import FINAL, Status, Worker, WorkRequest, effective_priority


class ConnectionFilter(admin.SimpleListFilter):
    title = "connection"
    parameter_name = "connection"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("connected", "connected"), ("disconnected", "disconnected")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "connected":
            return queryset.filter(connected_at__isnull=False)
        if self.value() == "disconnected":
            return queryset.filter(connected_at__isnull=True)
        return queryset


class WorkerForm(forms.ModelForm[Worker]):
    def clean_static_metadata(self) -> Any:
        metadata = self.cleaned_data["static_metadata"]
        try:
            workers.check_metadata("static metadata", metadata)
        except workers.InvalidMetadata as exc:
            raise ValidationError(str(exc)) from None
        return metadata


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin[Worker]):
    form = WorkerForm
    list_display = ("name", "connection", "enabled", "concurrency", "current_requests", "last_seen_at",
                    "registered_at")
    list_filter = (ConnectionFilter, ("token__enabled", admin.BooleanFieldListFilter))
    search_fields = ("name",)
    actions = ["disable_workers", "enable_workers"]
    fields = ("name", "token", "registered_at", "connected_at", "last_seen_at", "concurrency", "static_metadata",
              "dynamic_metadata")
    readonly_fields = ("name", "token", "registered_at", "connected_at", "last_seen_at", "dynamic_metadata")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        running = WorkRequest.objects.filter(status=Status.RUNNING).order_by("id")
        return super().get_queryset(request).select_related("token").prefetch_related(
            Prefetch("assigned", queryset=running, to_attr="running_requests")
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a worker registers with a token made for it (app/work/workers.py)

    def has_delete_permission(self, request: HttpRequest, obj: Worker | None = None) -> bool:
        return False  # its running requests would be left without a worker: disable it instead

    def save_model(self, request: HttpRequest, obj: Worker, form: Any, change: bool) -> None:
        # Only what the form may change: connection times and reported metadata are the worker's.
        Worker.objects.filter(pk=obj.pk).update(concurrency=obj.concurrency, static_metadata=obj.static_metadata)

    @admin.display(description="connection")
    def connection(self, obj: Worker) -> str:
        if obj.connected_at is None:
            return "disconnected"
        lost = workers.is_lost(obj.connected_at, obj.last_seen_at, timezone.now(), settings.WORKER_LOST_AFTER_S)
        return "lost" if lost else "connected"

    @admin.display(description="enabled", boolean=True, ordering="token__enabled")
    def enabled(self, obj: Worker) -> bool:
        return obj.token.enabled

    @admin.display(description="running")
    def current_requests(self, obj: Worker) -> SafeString | str:
        running: list[WorkRequest] = getattr(obj, "running_requests", [])
        if not running:
            return "-"
        return format_html_join(
            ", ", '<a href="{}">{}</a>',
            ((reverse("admin:work_workrequest_change", args=[r.pk]), f"#{r.pk} {r.task_name}") for r in running),
        )

    def has_change_token_permission(self, request: HttpRequest) -> bool:
        # Enabling a worker re-enables its token, possibly one revoked on purpose: the same right as
        # changing the token itself, besides changing the worker.
        return self.has_change_permission(request) and request.user.has_perm("switchyard_auth.change_token")

    @admin.action(description="Disable the selected workers (their tokens)", permissions=["change_token"])
    def disable_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_enabled(request, queryset, False)

    @admin.action(description="Enable the selected workers (their tokens)", permissions=["change_token"])
    def enable_workers(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        self._set_enabled(request, queryset, True)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Worker], enabled: bool) -> None:
        changed = 0
        for worker in queryset.select_related("token"):
            if worker.token.enabled != enabled:
                workers.set_enabled(worker, enabled)
                changed += 1
        self.message_user(request, f"{changed} worker(s) {'enabled' if enabled else 'disabled'}.", messages.SUCCESS)


@admin.register(WorkRequest)
class WorkRequestAdmin(admin.ModelAdmin[WorkRequest]):
    list_display = ("id", "task_name", "status", "result", "effective_priority", "worker", "attempts",
                    "created_by", "created_at", "started_at", "completed_at")
    list_filter = ("status", "result", "task_name", "worker")
    search_fields = ("=id", "task_name")
    list_select_related = ("worker", "created_by")
    actions = ["abort_requests", "retry_requests"]
    raw_id_fields = ("dependencies",)

    def get_readonly_fields(self, request: HttpRequest, obj: WorkRequest | None = None) -> list[str]:
        # The adjustment is the admins' say in the order; everything else is the request's record.
        return [f.name for f in WorkRequest._meta.get_fields()
                if f.concrete and f.name not in ("id", "priority_adjustment")]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # requests are validated against their task where they are created (submission.py)

    def has_delete_permission(self, request: HttpRequest, obj: WorkRequest | None = None) -> bool:
        # Finished requests only: deleting a pending or running one would drop it silently.
        return super().has_delete_permission(request, obj) and (obj is None or obj.status in FINAL)

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would delete requests in any status
        return actions

    def save_model(self, request: HttpRequest, obj: WorkRequest, form: Any, change: bool) -> None:
        # One column: saving the whole row would write back a status a worker changed meanwhile.
        WorkRequest.objects.filter(pk=obj.pk).update(priority_adjustment=obj.priority_adjustment)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # dependencies are read-only here

    @admin.display(description="priority", ordering=effective_priority())
    def effective_priority(self, obj: WorkRequest) -> int:
        return obj.priority

    @admin.action(description="Abort the selected work requests", permissions=["change"])
    def abort_requests(self, request: HttpRequest, queryset: QuerySet[WorkRequest]) -> None:
        aborted = sum(transitions.abort(pk) for pk in queryset.values_list("pk", flat=True))
        skipped = queryset.count() - aborted
        self.message_user(
            request, f"{aborted} request(s) aborted; {skipped} were neither pending nor running.", messages.SUCCESS
        )

    @admin.action(description="Retry the selected failed or aborted work requests", permissions=["change"])
    def retry_requests(self, request: HttpRequest, queryset: QuerySet[WorkRequest]) -> None:
        retried: list[str] = []
        refused: list[str] = []
        for pk in queryset.values_list("pk", flat=True):
            try:
                new = transitions.retry(pk)
            except ValueError as exc:  # its task data is no longer valid, its creator's quota
                refused.append(f"#{pk}: {exc}")
                continue
            if new is None:
                refused.append(f"#{pk}: not failed or aborted, or retried already")
            else:
                retried.append(f"#{pk} as #{new.pk}")
        if retried:
            self.message_user(request, f"{len(retried)} request(s) retried: {', '.join(retried)}.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Not retried: {'; '.join(refused)}.", messages.WARNING)

