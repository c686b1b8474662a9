from django.contrib import admin

from app.cqrs.admin import CQRSAdminMasterSyncMixin
from tests.apps.cqrs_master.models import Author


@admin.register(Author)
class AuthorAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "name", "cqrs_revision")
