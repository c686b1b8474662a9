"""The API's contracts, served by the server itself: the OpenAPI document and its docs page (assets from
this server), and the AsyncAPI 3.0 document of the websocket channels, valid against the official schema
and covering every websocket route."""

from __future__ import annotations

import json
import re
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.urls import URLPattern

from app.api.asyncapi import CHANNELS, FRAMES, asyncapi_document
from consumers.routing import PULSAR_CONSUMER, TOPIC, websocket_urlpatterns
from tests.servers import ServerProcess

# The official AsyncAPI 3.0.0 JSON schema, from the npm package @asyncapi/specs (tests/asyncapi_schema/README.md).
SCHEMA = Path(__file__).parent / "asyncapi_schema" / "asyncapi-3.0.0.json"
API = "/api/v1"
SAMPLES = {"topic": "contract-topic", "subscription": "contract-sub", "persistence": "persistent",
           "tenant": "public", "namespace": "default"}
# Routes that only refuse, so no channel: an unknown path (404) and a Pulsar consumer without a
# subscription (400, said in the pulsarConsumer channel's description).
REFUSING_ROUTES = {"", rf"^{PULSAR_CONSUMER}/{TOPIC}/?$"}


@cache
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def route_of(address: str) -> URLPattern:
    """The websocket route a channel's address reaches (the first that matches, as the router picks)."""
    path = address.format(**SAMPLES).lstrip("/")
    return next(route for route in websocket_urlpatterns if route.pattern.regex.search(path))


def get(server: ServerProcess, path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(server.http + path, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


@pytest.mark.database_agnostic
def test_asyncapi_document_is_valid() -> None:
    """The generated document validates against the official AsyncAPI 3.0.0 schema."""
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator().iter_errors(asyncapi_document("h:1"))]
    assert not errors, errors


@pytest.mark.database_agnostic
def test_schema_check_is_not_vacuous() -> None:
    """The schema refuses a document with an operation action AsyncAPI 3 does not have."""
    document = asyncapi_document("h:1")
    next(iter(document["operations"].values()))["action"] = "publish"
    assert not validator().is_valid(document)


@pytest.mark.database_agnostic
def test_every_websocket_route_has_a_channel() -> None:
    """Every websocket route but the refusing ones is reached by a channel's address."""
    reached = {id(route_of(channel.address)) for channel in CHANNELS}
    missing = [route.pattern.regex.pattern for route in websocket_urlpatterns
               if id(route) not in reached and route.pattern.regex.pattern not in REFUSING_ROUTES]
    assert not missing, missing


@pytest.mark.database_agnostic
def test_each_channel_reaches_its_own_route() -> None:
    """No two channels' addresses lead to the same route, and none to a refusing one."""
    patterns = [route_of(channel.address).pattern.regex.pattern for channel in CHANNELS]
    assert len(set(patterns)) == len(patterns)
    assert not set(patterns) & REFUSING_ROUTES


@pytest.mark.database_agnostic
def test_message_payloads_are_the_frame_models() -> None:
    """Each message's payload is the JSON schema pydantic generates for its frame model."""
    components = asyncapi_document("h:1")["components"]
    for name, frame in FRAMES.items():
        model = frame.model.__name__
        assert components["messages"][name]["payload"] == {"$ref": f"#/components/schemas/{model}"}
        generated = frame.model.model_json_schema(mode=frame.mode, ref_template="#/components/schemas/{model}")
        generated.pop("$defs", None)
        assert components["schemas"][model] == generated


@pytest.mark.database_agnostic
def test_pulsar_query_parameters_are_the_params_models() -> None:
    """The Pulsar channels' query bindings list every field of the model that reads that handshake."""
    channels = asyncapi_document("h:1")["channels"]
    for channel in CHANNELS:
        query = channels[channel.name]["bindings"]["ws"]["query"]["properties"]
        fields = set(channel.query.model_fields) if channel.query is not None else set()
        assert set(query) == fields | {"token"}, channel.name


def test_asyncapi_json_is_served(server: ServerProcess) -> None:
    """``/api/v1/asyncapi.json`` serves the document, its server being the host asked."""
    status, content_type, body = get(server, f"{API}/asyncapi.json")
    document = json.loads(body)
    assert (status, content_type) == (200, "application/json")
    switchyard = document["servers"]["switchyard"]
    assert (switchyard["host"], switchyard["protocol"]) == (server.http.removeprefix("http://"), "ws")
    assert validator().is_valid(document)


def test_asyncapi_page_lists_every_channel(server: ServerProcess) -> None:
    """``/api/v1/asyncapi`` is an HTML page naming every channel's address and every message's model."""
    status, content_type, body = get(server, f"{API}/asyncapi")
    page = body.decode()
    assert (status, content_type.split(";")[0]) == (200, "text/html")
    for channel in CHANNELS:
        assert f"<code>{channel.address}</code>" in page
    for frame in FRAMES.values():
        assert f'id="schema-{frame.model.__name__}"' in page


def test_openapi_json_still_served(server: ServerProcess) -> None:
    """``/api/v1/openapi.json`` answers with the HTTP operations, not the contract pages."""
    status, _, body = get(server, f"{API}/openapi.json")
    paths = json.loads(body)["paths"]
    assert status == 200 and f"{API}/topics/{{slug}}/status" in paths
    assert not [path for path in paths if "asyncapi" in path]


def test_docs_page_assets_are_local(server: ServerProcess) -> None:
    """Every script and stylesheet of ``/api/v1/docs`` is a path on this server, and is served."""
    _, _, body = get(server, f"{API}/docs")
    assets = re.findall(r'(?:src|href)="([^"]+)"', body.decode())
    assert assets and all(asset.startswith("/static/") for asset in assets), assets
    for asset in assets:
        assert get(server, asset)[0] == 200


# OpenAPI examples
@cache
def openapi_document() -> dict[str, Any]:
    from ninja.responses import NinjaJSONEncoder

    from app.api.urls import api

    document: dict[str, Any] = json.loads(json.dumps(api.get_openapi_schema(), cls=NinjaJSONEncoder))
    return document


def json_bodies() -> list[tuple[str, dict[str, Any]]]:
    """Every JSON request and response body of every operation, named ``METHOD path status``."""
    found = []
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            request = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if request is not None:
                found.append((f"{method.upper()} {path} request", request))
            for status, response in operation["responses"].items():
                body = response.get("content", {}).get("application/json")
                if body is not None:
                    found.append((f"{method.upper()} {path} {status}", body))
    return found


def test_every_json_body_has_an_example() -> None:
    """Each operation shows an example of its request body and of every answer with a body."""
    assert [name for name, body in json_bodies() if "example" not in body] == []


def test_examples_match_their_schemas() -> None:
    """Every example validates against the schema it illustrates."""
    components = openapi_document()["components"]
    wrong = []
    for name, body in json_bodies():
        validator = jsonschema.Draft202012Validator({**body["schema"], "components": components})
        wrong += [f"{name}: {error.message}" for error in validator.iter_errors(body["example"])]
    assert wrong == []


def test_example_check_is_not_vacuous() -> None:
    """An example that breaks its schema is caught."""
    components = openapi_document()["components"]
    topic = {"$ref": "#/components/schemas/TopicOut"}
    assert list(jsonschema.Draft202012Validator({**topic, "components": components}).iter_errors({"name": 7}))
