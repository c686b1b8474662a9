"""Outbox events in the admin: read-only rows, dead letters filterable and retryable."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from app.outbox import claims
from app.outbox.cloudevents import is_json_type, is_text_type
from app.outbox.models import OutboxEvent, Status

PREVIEW_BYTES = 2000


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin[OutboxEvent]):
    list_display = ("id", "type", "source", "key", "target", "status", "attempts", "next_attempt_at",
                    "created_at", "published_at")
    list_filter = ("status", "target", "type")
    search_fields = ("event_id", "type", "source", "subject", "key")
    actions = ["retry_events"]
    exclude = ("data",)
    readonly_fields = [f.name for f in OutboxEvent._meta.fields if f.name != "data"] + ["data_preview"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # events come from emit(), inside the transaction that caused them

    def has_delete_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        # Only dead letters may go: deleting a pending event would silently drop it.
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or obj.status == Status.FAILED)

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would delete events in any status
        return actions

    def has_change_permission(self, request: HttpRequest, obj: OutboxEvent | None = None) -> bool:
        return False  # read-only detail; the retry action is the way to change an event

    @admin.display(description="data")
    def data_preview(self, obj: OutboxEvent) -> str:
        if obj.data is None:
            return "-"
        raw = bytes(obj.data)
        if is_json_type(obj.datacontenttype) or is_text_type(obj.datacontenttype):
            text = raw[:PREVIEW_BYTES].decode(errors="replace")
            return text + ("…" if len(raw) > PREVIEW_BYTES else "")
        return f"{len(raw)} bytes of {obj.datacontenttype}"

    @admin.action(description="Retry the selected dead letters / waiting retries now",
                  permissions=["retry"])
    def retry_events(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        count = claims.retry(Q(pk__in=list(queryset.values_list("pk", flat=True))))
        self.message_user(request, f"{count} event(s) queued again.", messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox.change_outboxevent")
