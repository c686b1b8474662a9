from __future__ import annotations

from django.http import HttpRequest, JsonResponse


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving HTTP."""
    return JsonResponse({"status": "ok"})
