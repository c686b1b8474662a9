"""Schemathesis against the OpenAPI document and a real server: every operation, as a superuser and
as an unprivileged user, answers no 5xx and only what the document declares (status, content type,
body schema, headers).

Operations come from the document, so an endpoint added later is fuzzed without touching this file.
The document is built in process when the module is collected (the call /api/v1/openapi.json makes,
and a test checks the server serves the same): schemathesis' schemas loaded from a fixture fail on
pytest 9.2, and a collected schema gives each operation a test id of its own.

Generation is deterministic (fixed seed, derandomized, no example database) so CI replays the same
requests; examples per operation are few so the module stays within a minute on two cores. The
server is a throwaway one on a database of its own: the admin's DELETEs may remove whatever they hit.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_client import call
from tests.protocol import auth, connect, publish, unique
from tests.servers import ServerProcess, manage, migrated_database_url, start_server

# Examples per operation: enough for CI to find what a change breaks; SWITCHYARD_FUZZ_EXAMPLES=200 searches
# further. The PostgreSQL pass runs fewer (Makefile): conformance to the document is the same code on both
# backends, and what only PostgreSQL refuses (NUL, numbers past 64 bits) is reached within a few.
MAX_EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "10"))
# Another seed explores other requests: SWITCHYARD_FUZZ_SEED=N (CI keeps the fixed one).
SEED = int(os.environ.get("SWITCHYARD_FUZZ_SEED", "14"))
# schemathesis' coverage phase (each parameter's boundaries and wrong types, a hundred-odd requests per
# operation) is most of the module's time. The PostgreSQL pass skips it (SWITCHYARD_FUZZ_COVERAGE=0): its
# cases are the same on both backends, and what only PostgreSQL refuses (NUL, numbers past 64 bits) has tests
# of its own per resource.
COVERAGE = os.environ.get("SWITCHYARD_FUZZ_COVERAGE", "1") != "0"


def no_server_error(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """schemathesis' not_a_server_error, but for the bulk POST's 502: a documented answer (an
    operation failed and the transaction rolled back), which the operation's own result explains."""
    if (case.method.upper(), case.operation.path, response.status_code) == ("POST", "/api/v1/_bulk/", 502):
        results = response.json()
        assert isinstance(results, list) and results and results[-1]["status"] >= 400, results
        return True
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    response_headers_conformance,
]
# Generated requests never need more; a hang is a failure, not a slow test.
REQUEST_TIMEOUT_S = 10


# A topic holding a stored message on the fuzzed server: generated path parameters are swapped for
# these about half the time, so operations also answer with real data (checked against their schemas)
# rather than 404 for made-up names only.
SEEDED = {"slug": "fuzz-seeded", "message_id": "5f0c8d52-9a4e-4b43-8a1e-2d7f3c6b9e01"}


async def _seed(proc: ServerProcess) -> None:
    manage(proc.database_url, "dasf_topic", SEEDED["slug"], "--new", "--anonymous", "--no-dasf",
           "--store-messages", "store")
    producer = await connect(proc.ws + SEEDED["slug"])
    ack = await publish(producer, messageId=SEEDED["message_id"], properties={"kind": "seed"})
    assert ack["result"] == "ok", ack
    await producer.close()


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on a database of its own, which the fuzzing may fill and empty."""
    directory: Path = tmp_path_factory.mktemp("fuzz")
    proc = start_server(migrated_database_url(directory, "fuzz"))
    asyncio.run(_seed(proc))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    """The module's token of each role (a management command per token costs a Django start-up)."""
    return {}


@pytest.fixture(params=["superuser", "user"])
def caller_key(request: pytest.FixtureRequest, fuzzed_server: ServerProcess, keys: dict[str, str]) -> str:
    """A working token of a superuser, or of a user with no rights at all: the module's, unless an
    earlier test's DELETE or disable revoked it (any order of tests then sees the same callers)."""
    role = request.param
    if role not in keys or call(fuzzed_server, "/tokens?limit=1", key=keys[role])[0] == 401:
        flags = ["--superuser"] if role == "superuser" else []
        keys[role] = manage(fuzzed_server.database_url, "createtoken", unique(role), "--create-user", *flags)
    return keys[role]


def _document() -> dict[str, Any]:
    """What /api/v1/openapi.json serves (the same call its view makes, as JSON: status codes become
    strings), read when the module is collected."""
    from ninja.responses import NinjaJSONEncoder

    from app.api.urls import api

    document: dict[str, Any] = json.loads(json.dumps(api.get_openapi_schema(), cls=NinjaJSONEncoder))
    return document


schema = schemathesis.openapi.from_dict(_document(), config=SchemathesisConfig.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"coverage": {"enabled": COVERAGE}},
}))


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    known = {name: SEEDED[name] for name in path_parameters or {} if name in SEEDED}
    return st.sampled_from([path_parameters, {**(path_parameters or {}), **known}] if known else [path_parameters])


def test_fuzzed_document_is_the_served_one(fuzzed_server: ServerProcess) -> None:
    """The document the operations come from is what the server serves at /api/v1/openapi.json."""
    assert call(fuzzed_server, "/openapi.json") == (200, _document())


@schema.parametrize()
# The token fixture runs once per operation and role, not per example: that is meant.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_operation_conforms(case: schemathesis.Case, fuzzed_server: ServerProcess, caller_key: str) -> None:
    """The operation answers no 5xx, and its status, content type, headers and body are documented."""
    case.call_and_validate(base_url=fuzzed_server.http, headers=auth(caller_key), checks=CHECKS,
                           timeout=REQUEST_TIMEOUT_S)


@pytest.fixture
def worker_key(fuzzed_server: ServerProcess, keys: dict[str, str]) -> str:
    """A working key of a worker of the fuzzed server (registered over the API by a superuser): the
    module's, unless an earlier test's disable or token DELETE revoked it."""
    if "worker" not in keys or call(fuzzed_server, "/worker", key=keys["worker"])[0] == 401:
        admin = manage(fuzzed_server.database_url, "createtoken", unique("admin"), "--create-user", "--superuser")
        status, body = call(fuzzed_server, "/workers", "POST", admin, {"name": unique("fuzz-worker")})
        assert status == 201, body
        keys["worker"] = body["key"]
    return keys["worker"]


# The worker endpoints take a worker's token alone (every other caller gets 401): fuzzed once more as
# a worker, so their bodies and answers are checked past authentication too.
@schema.include(tag="worker").parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_worker_operation_conforms(case: schemathesis.Case, fuzzed_server: ServerProcess, worker_key: str) -> None:
    """As a worker, the worker endpoints answer no 5xx, and only what the document declares."""
    case.call_and_validate(base_url=fuzzed_server.http, headers=auth(worker_key), checks=CHECKS,
                           timeout=REQUEST_TIMEOUT_S)
