from django.contrib import admin

from app.auth.models import Token


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin[Token]):
    list_display = ("prefix", "user", "enabled", "comment", "created_at")
    list_filter = ("enabled",)
    search_fields = ("prefix", "user__username", "comment")
    readonly_fields = ("prefix", "created_at")

    def has_add_permission(self, request: object) -> bool:
        # A key is shown only once, so tokens are issued with `manage.py createtoken`.
        return False
