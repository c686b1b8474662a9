"""The admin login behind the login throttle (app/auth/login_throttle.py)."""

from __future__ import annotations

import math
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.debug import sensitive_post_parameters

from app.auth.login_throttle import LoginAttempt, admit, record_success


def too_many_failures(wait_s: float) -> JsonResponse:
    seconds = max(1, math.ceil(wait_s))
    response = JsonResponse({"detail": f"too many failed logins; try again in {seconds} s"}, status=429)
    response["Retry-After"] = str(seconds)
    add_never_cache_headers(response)
    return response


@sensitive_post_parameters("password")
def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """``admin.site.login``, refusing throttled posts before their password is checked."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    # REMOTE_ADDR is the peer, or X-Forwarded-For when uvicorn trusts the proxy (FORWARDED_ALLOW_IPS).
    attempt = LoginAttempt(address=request.META.get("REMOTE_ADDR") or "", username=request.POST.get("username", ""))
    admission = admit(attempt)
    if admission.wait_s > 0:
        return too_many_failures(admission.wait_s)
    response = admin.site.login(request, extra_context)
    # The login view redirects only once it has logged the user in; a failed form is shown again
    # (and the attempt stays counted as a failure).
    if response.status_code == 302:
        record_success(attempt, admission)
    return response
