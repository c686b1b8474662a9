"""The websocket contract: ``/api/v1/asyncapi.json`` (AsyncAPI 3.0) and ``/api/v1/asyncapi`` (the same, as a page).

Both are public, like ``/api/v1/openapi.json``: they describe the protocol, not anyone's data.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from ninja import Router

from app.api.asyncapi import asyncapi_document

router = Router(tags=["contracts"])


def _document(request: HttpRequest) -> dict[str, Any]:
    return asyncapi_document(request.get_host(), secure=request.is_secure())


@router.get("/asyncapi.json", auth=None, include_in_schema=False)
async def asyncapi_json(request: HttpRequest) -> HttpResponse:
    return JsonResponse(_document(request))


def page_context(document: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of ``document``: channels with their operations, messages with their schemas."""
    messages = document["components"]["messages"]
    channels = []
    for name, channel in document["channels"].items():
        operations = [
            {"name": op_name, "action": op["action"], "summary": op["summary"]}
            for op_name, op in document["operations"].items() if op["channel"]["$ref"] == f"#/channels/{name}"
        ]
        channels.append({
            "name": name, "address": channel["address"], "description": channel["description"],
            "parameters": channel.get("parameters", {}), "query": channel["bindings"]["ws"]["query"]["properties"],
            "operations": operations,
        })
    return {
        "info": document["info"],
        "server": document["servers"]["switchyard"],
        "channels": channels,
        "messages": [{"key": key, "name": message["name"], "description": message["description"]}
                     for key, message in messages.items()],
        "schemas": [{"name": name, "json": json.dumps(schema, indent=2)}
                    for name, schema in document["components"]["schemas"].items()],
    }


@router.get("/asyncapi", auth=None, include_in_schema=False)
async def asyncapi_page(request: HttpRequest) -> HttpResponse:
    return render(request, "api/asyncapi.html", page_context(_document(request)))
