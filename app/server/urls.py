from django.contrib import admin
from django.urls import path

from app.server.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz),
]
