from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from app.pulsar.models import Subscription
from app.pulsar.services import delete_subscription


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin[Subscription]):
    """Read only: cursors move by consumers' acks. Unsubscribing goes through the service, which
    releases the messages the subscription held (a plain delete would not)."""

    list_display = ("name", "topic", "type", "start_sequence", "acked_through", "last_active", "created_by")
    list_filter = ("type",)
    search_fields = ("topic__slug", "name")
    list_select_related = ("topic",)
    actions = ["unsubscribe"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Unsubscribe (delete and release their messages)")
    def unsubscribe(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for subscription_id in ids:
            delete_subscription(subscription_id)
        self.message_user(request, f"{len(ids)} subscriptions deleted", messages.SUCCESS)
