"""The status page: every topic the visitor may see, with a live online / offline / unknown badge."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from app.availability.services import statuses, visible_topics


async def status_page(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    slugs = await sync_to_async(visible_topics)(user)
    rows = sorted(await sync_to_async(statuses)(slugs), key=lambda s: s.slug)
    return render(request, "availability/status.html", {"rows": rows, "user": user})
