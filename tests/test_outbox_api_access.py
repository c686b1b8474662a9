"""Who may call the outbox over HTTP (/api/v1/outbox/, on a real server): every endpoint refuses an anonymous
caller (401) and a user without outbox permissions (403), each permission allows only its own operations; and
the OpenAPI schema documents every endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from app.outbox.models import OutboxEvent, Status
from tests.api_client import API, call
from tests.outbox import event, outbox_key
from tests.protocol import make_token, make_user
from tests.servers import ServerProcess

pytestmark = pytest.mark.usefixtures("empty_outbox")


ENDPOINTS = [
    pytest.param("GET", "/outbox/events", None, id="list"),
    pytest.param("GET", "/outbox/events/{pk}", None, id="get"),
    pytest.param("POST", "/outbox/events/{pk}/retry", None, id="retry"),
    pytest.param("POST", "/outbox/dead-letters/retry", None, id="retry-dead-letters"),
    pytest.param("DELETE", "/outbox/events/{pk}", None, id="delete"),
    pytest.param("POST", "/outbox/events", {"type": "com.example.denied", "source": "/tests"}, id="emit"),
    pytest.param("GET", "/outbox/stats", None, id="stats"),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_anonymous_is_401(server: ServerProcess, method: str, path: str, body: Any) -> None:
    """Every outbox endpoint answers 401 without credentials and changes nothing."""
    row = event(Status.FAILED)
    assert call(server, path.format(pk=row.pk), method, body=body)[0] == 401
    assert OutboxEvent.objects.get().status == Status.FAILED


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_user_without_permission_is_403(server: ServerProcess, method: str, path: str, body: Any) -> None:
    """Every outbox endpoint answers 403 to a user holding no outbox permission and changes nothing."""
    row = event(Status.FAILED)
    status, answer = call(server, path.format(pk=row.pk), method, make_token(make_user()), body)
    assert status == 403 and "outbox." in answer["detail"]
    assert OutboxEvent.objects.get().status == Status.FAILED


def test_unknown_token_is_401(server: ServerProcess) -> None:
    """A token that matches no user authenticates nobody: 401."""
    assert call(server, "/outbox/events", key="no-such-key")[0] == 401


def test_view_permission_does_not_allow_emitting(server: ServerProcess) -> None:
    """``view_outboxevent`` lists events but emitting needs ``add_outboxevent`` (403)."""
    key = outbox_key("view_outboxevent")
    assert call(server, "/outbox/events", key=key)[0] == 200
    assert call(server, "/outbox/events", "POST", key, {"type": "t", "source": "/s"})[0] == 403


def test_openapi_lists_outbox_paths(server: ServerProcess) -> None:
    """The OpenAPI schema documents every outbox path and method."""
    status, schema = call(server, "/openapi.json")
    assert status == 200
    paths = {path: set(ops) for path, ops in schema["paths"].items() if "/outbox/" in path}
    assert paths == {
        f"{API}/outbox/events": {"get", "post"},
        f"{API}/outbox/events/{{pk}}": {"get", "delete"},
        f"{API}/outbox/events/{{pk}}/retry": {"post"},
        f"{API}/outbox/dead-letters/retry": {"post"},
        f"{API}/outbox/stats": {"get"},
    }
