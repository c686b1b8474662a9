"""``CQRSAdminMasterSyncMixin``: django-cqrs's admin action that re-sends the selected rows of a
master model (a SYNC each, through the outbox). Add it to the model's admin:

    @admin.register(Author)
    class AuthorAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
        ...
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy

from app.cqrs import sync


class CQRSAdminMasterSyncMixin:
    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Added here rather than in ``actions`` so a subclass's own list keeps it (django-cqrs alike).
        actions = getattr(self, "actions", None)
        if actions is not None and "sync_items" not in actions:
            self.actions = [*actions, "sync_items"]
        result: dict[str, Any] = super().get_actions(request)  # type: ignore[misc]
        return result

    def _cqrs_sync_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Override to adjust the rows before they are synced (select_related, ...)."""
        return queryset

    # Only for those who may change the rows (django-cqrs offers it to anyone who sees the list).
    @admin.action(permissions=["change"],
                  description=gettext_lazy("Synchronize selected %(verbose_name_plural)s via CQRS"))
    def sync_items(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        report = sync.sync_rows(self._cqrs_sync_queryset(queryset))
        failed = [pk for pk, _ in report.failures]
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(  # type: ignore[attr-defined]
            request, f"{report.synced} successfully synced. {len(failed)} failed: {failed}", level)
