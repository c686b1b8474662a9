from django.contrib import admin

from app.leases.models import Lease


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin[Lease]):
    list_display = ("name", "holder", "expires_at")
