"""ASGI entry point: ``uvicorn settings.asgi:application`` (``manage.py serve`` wraps it)."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from app.server.asgi import build_application  # noqa: E402

application = build_application()
