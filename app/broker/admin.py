from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from app.broker.models import Delivery, Message, Topic


@admin.register(Topic)
class TopicAdmin(GuardedModelAdmin):
    list_display = ("slug", "is_public", "store_messages", "supports_dasf", "response_for", "last_ping",
                    "last_pong", "created", "created_by")
    list_filter = ("is_public", "supports_dasf", "store_messages")
    search_fields = ("slug",)
    # Availability is what modules answer, and api_info is bounded where they answer it
    # (app/availability/answers.py): an admin form would store any size or depth.
    readonly_fields = ("last_sequence", "created", "created_by", "last_ping", "last_pong", "api_info")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = ("message_id", "topic", "sequence", "producer_principal", "publish_time")
    list_filter = ("topic",)
    search_fields = ("message_id",)
    readonly_fields = ("frame",)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin[Delivery]):
    list_display = ("message", "principal", "redelivery_count", "acked_at")
    search_fields = ("principal",)
