"""What a bulk request (/api/v1/_bulk/) refuses, on a real server: malformed bodies, nested bulks, paths that
name no operation, too many operations, headers HTTP cannot carry, and the limits on what references may add
to an operation and on the results a bulk keeps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from app.broker.models import Topic
from tests.api_client import BULK, call, create, creator_key, statuses
from tests.protocol import eventually, unique
from tests.servers import ServerProcess, start_server

# A result of about 12 KB (its path echoes the query), whoever calls: the first operation of the
# amplification tests, each use of it in a later one adding 12 KB.
BIG_QUERY = "prefix=" + "x" * 12_000
BIG_RESULT = {"method": "get", "path": "topics", "query": BIG_QUERY}
# BULK_MAX_RESULT_BYTES of the capped server: two BIG_RESULTs fit, the third passes it.
RESULT_CAP = 30_000


# The request and its operations
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_nested_bulk_is_refused(server: ServerProcess, method: str) -> None:
    """An operation that is itself a bulk is a 422 in its result (a POST bulk then fails as a whole)."""
    status, results = call(server, BULK, method, creator_key(), [{"method": "post", "path": "_bulk", "data": []}])
    assert status == (502 if method == "POST" else 200)
    assert statuses(results) == [422]
    assert results[0]["info"] == "a bulk cannot hold a bulk"


def test_unknown_path_is_404_in_its_result(server: ServerProcess) -> None:
    """A path that names no API operation is that operation's 404."""
    status, results = call(server, BULK, "PUT", creator_key(), [{"method": "get", "path": "nowhere"}])
    assert (status, statuses(results), results[0]["path"]) == (200, [404], "/api/v1/nowhere")


@pytest.mark.parametrize("path", ["", []])
def test_api_root_is_no_operation(server: ServerProcess, path: Any) -> None:
    """An empty path (the API root, whose view raises Http404) is that operation's 404, not a 500."""
    status, results = call(server, BULK, "PUT", creator_key(), [{"method": "get", "path": path}])
    assert (status, statuses(results)) == (200, [404])
    assert results[0]["info"] == "no API operation at /api/v1/"


def test_too_many_operations_are_refused_before_any_runs(server: ServerProcess) -> None:
    """More than BULK_MAX_OPERATIONS operations: 422 naming the limit, and none of them ran."""
    prefix = unique("many")
    operations = [create(f"{prefix}-{n}") for n in range(settings.BULK_MAX_OPERATIONS + 1)]
    status, body = call(server, BULK, "PUT", creator_key(), operations)
    assert status == 422
    assert "BULK_MAX_OPERATIONS" in body["detail"]
    assert not Topic.objects.filter(slug__startswith=prefix).exists()


@pytest.mark.parametrize("body", [
    {"method": "get", "path": "topics"},
    [{"method": "trace", "path": "topics"}],
    [{"method": "get"}],
    [{"method": "get", "path": "topics", "let": "0"}],
    [{"method": "get", "path": "topics", "let": "a"}, {"method": "get", "path": "topics", "let": "a"}],
    "not json at all",
])
def test_malformed_bulk_is_422(server: ServerProcess, body: Any) -> None:
    """Not a list, an unknown method, no path, a bad or repeated let name: 422 with a JSON body."""
    status, answer = call(server, BULK, "POST", creator_key(), body)
    assert status == 422
    assert "detail" in answer


def test_header_that_http_cannot_carry_is_refused(server: ServerProcess) -> None:
    """A header value outside latin-1 is that operation's 422, not a server error."""
    status, results = call(server, BULK, "PUT", creator_key(), [
        {"method": "get", "path": "topics", "headers": {"X-Note": "\u2603"}},
        {"method": "get", "path": "topics", "headers": {"X-Note": "plain"}},
    ])
    assert (status, statuses(results)) == (200, [422, 200])


# Limits: what references may add, what a bulk keeps
AMPLIFIED = {
    "data": ({"method": "post", "path": "tokens", "data": {"comment": "x", "extra": ["<<0[path]>>"] * 2000}},
             "data: its references add more than", "DATA_UPLOAD_MAX_MEMORY_SIZE"),
    "query": ({"method": "get", "path": "topics", "query": "prefix=<<0[path]>><<0[path]>>"},
              "path, query and headers: its references add more than", "MAX_REQUEST_HEAD_BYTES"),
    "headers": ({"method": "get", "path": "topics", "headers": {"X-Note": "<<0[path]>><<0[path]>>"}},
                "path, query and headers: its references add more than", "MAX_REQUEST_HEAD_BYTES"),
    "path": ({"method": "get", "path": ["topics", "<<0[path]>><<0[path]>>"]},
             "path, query and headers: its references add more than", "MAX_REQUEST_HEAD_BYTES"),
}


@pytest.mark.parametrize("part", list(AMPLIFIED))
@pytest.mark.parametrize("key", [None, "creator"])
def test_references_cannot_amplify_an_operation_under_put(server: ServerProcess, part: str, key: str | None) -> None:
    """References that would make an operation's body or head larger than a direct request's may be are
    its 422, before any view saw it (info; not the 401 an anonymous token create gets), also anonymous."""
    operation, reason, setting = AMPLIFIED[part]
    status, results = call(server, BULK, "PUT", key and creator_key(), [BIG_RESULT, operation, BIG_RESULT])
    assert (status, statuses(results)) == (200, [200, 422, 200]), results
    assert results[1]["info"].startswith(reason) and setting in results[1]["info"]


@pytest.mark.parametrize("part", list(AMPLIFIED))
def test_references_cannot_amplify_an_anonymous_post_bulk(server: ServerProcess, part: str) -> None:
    """Under POST such an operation fails the bulk: 502, and nothing after it runs."""
    operation, reason, _ = AMPLIFIED[part]
    status, results = call(server, BULK, "POST", None, [BIG_RESULT, operation, BIG_RESULT])
    assert (status, statuses(results)) == (502, [200, 422])
    assert results[1]["info"].startswith(reason)


def test_head_over_the_server_limit_is_refused(server: ServerProcess) -> None:
    """An operation whose own headers make a head larger than MAX_REQUEST_HEAD_BYTES is its 422 (directly: 431)."""
    status, results = call(server, BULK, "PUT", None, [
        {"method": "get", "path": "topics", "headers": {"X-Note": "x" * settings.MAX_REQUEST_HEAD_BYTES}},
    ])
    assert (status, statuses(results)) == (200, [422])
    assert "more than MAX_REQUEST_HEAD_BYTES" in results[0]["info"]


@pytest.fixture(scope="module")
def capped_server() -> Iterator[ServerProcess]:
    """A server whose bulks keep at most RESULT_CAP bytes of results."""
    proc = start_server(os.environ["DATABASE_URL"], BULK_MAX_RESULT_BYTES=str(RESULT_CAP))
    yield proc
    proc.stop()


def left_out(result: dict[str, Any]) -> bool:
    info = result["info"] or ""
    return result["data"] is None and f"would pass BULK_MAX_RESULT_BYTES ({RESULT_CAP} bytes)" in info


@pytest.mark.parametrize("key", [None, "creator"])
def test_result_cap_stops_a_put_bulk(capped_server: ServerProcess, key: str | None) -> None:
    """The operation whose answer passes BULK_MAX_RESULT_BYTES is the last run, its answer left out (also anonymous)."""
    name = unique("capped")
    status, results = call(capped_server, BULK, "PUT", key and creator_key(),
                           [BIG_RESULT, BIG_RESULT, BIG_RESULT, create(name)])
    assert (status, statuses(results)) == (200, [200, 200, 200])
    assert left_out(results[2]) and not any(map(left_out, results[:2]))
    assert not Topic.objects.filter(slug=name).exists()


def test_result_cap_fails_a_post_bulk(capped_server: ServerProcess) -> None:
    """Under POST passing BULK_MAX_RESULT_BYTES fails the bulk: 502, and what ran is rolled back."""
    name = unique("capped")
    status, results = call(capped_server, BULK, "POST", creator_key(),
                           [create(name), BIG_RESULT, BIG_RESULT, BIG_RESULT])
    assert (status, statuses(results)) == (502, [201, 200, 200, 200])
    assert left_out(results[3])
    assert not Topic.objects.filter(slug=name).exists()


async def test_failed_post_bulk_is_no_server_error(capped_server: ServerProcess) -> None:
    """A POST bulk's 502 is logged by django.request as a WARNING (the server_log check fails on an ERROR)."""
    mark = len(capped_server.output)
    status, _ = call(capped_server, BULK, "POST", None, [{"method": "get", "path": "nowhere"}])
    assert status == 502
    await eventually(lambda: any("WARNING django.request: Bad Gateway: /api/v1/_bulk/" in line
                                 for line in capped_server.output[mark:]), message="the 502's log line")
