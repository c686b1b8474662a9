from django.contrib import admin
from django.urls import path

from app.api.urls import api
from app.auth.views import admin_login
from app.availability.views import status_page
from app.server.metrics import metrics
from app.server.readiness import readyz
from app.server.views import favicon, healthz

urlpatterns = [
    path("", status_page, name="status-page"),
    # Before the admin's own URLs, so its login page is the throttled one.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics),
    path("favicon.ico", favicon),
]
