"""Health, readiness, metrics and the JSON log format, against real server processes."""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.server.metrics import error_category
from tests.api_client import call
from tests.protocol import (
    connect,
    eventually,
    make_token,
    make_topic,
    make_user,
    publish,
    recv_json,
    send_json,
    subscribe,
    unique,
)
from tests.servers import ROOT, ServerProcess, run_sql, start_server

DASHBOARD = ROOT / "deploy" / "grafana" / "switchyard.json"


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str) -> dict[str, float]:
    """The samples of a Prometheus text page, by name with labels."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def metric_names(text: str) -> set[str]:
    return {name.split("{")[0] for name in samples(text)}


def test_healthz_says_the_process_is_up(server: ServerProcess) -> None:
    """/healthz answers 200 while the process serves."""
    status, body = fetch(server.http + "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_readyz_is_200_with_its_checks(server: ServerProcess) -> None:
    """/readyz answers 200 with each check ok when the database and channel layer are reachable."""
    status, body = fetch(server.http + "/readyz")
    answer = json.loads(body)
    assert status == 200, answer
    assert answer["checks"]["database"] == "ok" and answer["checks"]["channel_layer"] == "ok"
    assert answer["unreachable"] == []


@pytest.mark.server_errors(r"ERROR aiormq\.connection: error when creating transport")
def test_readyz_names_an_unreachable_outbox_target(tmp_path: Path) -> None:
    """With AMQP_URL on a closed port, /readyz answers 503 naming outbox:rabbitmq, and only it."""
    from tests.servers import migrated_database_url

    proc = start_server(migrated_database_url(tmp_path, "amqp"), AMQP_URL=f"amqp://guest:guest@127.0.0.1:{closed_port()}/",
                        READINESS_TIMEOUT_S="1")
    try:
        status, body = fetch(proc.http + "/readyz")
        answer = json.loads(body)
        assert status == 503, answer
        assert answer["unreachable"] == ["outbox:rabbitmq"]
        assert answer["checks"]["database"] == "ok"
    finally:
        proc.stop()


def test_readyz_names_an_unreachable_channel_layer(tmp_path: Path) -> None:
    """A channel layer that stops answering: /readyz answers 503 naming channel_layer (a stub server
    that accepts and never answers stands for a hung Redis)."""
    import asyncio

    from app.server import readiness

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        from django.test import override_settings

        with override_settings(REDIS_URL=f"redis://127.0.0.1:{silent.getsockname()[1]}/0", READINESS_TIMEOUT_S=0.3):
            outcome = asyncio.run(readiness._outcome(readiness.check_channel_layer))
    assert outcome.startswith("unreachable")


def test_readyz_names_a_broken_database(breakable_server: ServerProcess) -> None:
    """A database that no longer has Switchyard's tables: /readyz answers 503 naming database."""
    run_sql(breakable_server.database_url, "DROP TABLE django_migrations")
    status, body = fetch(breakable_server.http + "/readyz")
    answer = json.loads(body)
    assert status == 503, answer
    assert answer["unreachable"] == ["database"]


async def test_metrics_count_frames_connections_and_deliveries(own_server: ServerProcess) -> None:
    """A published message moves the frame, delivery and commit figures; an open consumer is counted."""
    slug = make_topic(policy="cache")
    consumer = await subscribe(own_server.ws, slug, "s")
    producer = await connect(own_server.ws + slug)
    await publish(producer)
    await recv_json(consumer)
    status, text = fetch(own_server.http + "/metrics")
    assert status == 200
    figures = samples(text)
    assert figures['switchyard_connections{kind="dasf_consumer"}'] == 1
    assert figures['switchyard_connections{kind="dasf_producer"}'] == 1
    assert figures["switchyard_frames_in_total"] >= 1
    assert figures["switchyard_deliveries_total"] >= 1
    assert figures["switchyard_commit_batch_rows_count"] >= 1
    assert figures["switchyard_producer_ack_seconds_count"] >= 1


async def test_metrics_count_error_frames_by_category(own_server: ServerProcess) -> None:
    """A frame that is not JSON is counted under reason="json"."""
    slug = make_topic()
    producer = await connect(own_server.ws + slug)
    await producer.send("not json")
    await recv_json(producer)
    figures = samples(fetch(own_server.http + "/metrics")[1])
    assert figures['switchyard_error_frames_total{reason="json"}'] == 1


async def test_closed_connections_are_not_counted(own_server: ServerProcess) -> None:
    """A connection that closed no longer counts in switchyard_connections."""
    slug = make_topic()
    producer = await connect(own_server.ws + slug)
    await producer.close()
    await eventually(lambda: samples(fetch(own_server.http + "/metrics")[1])
                     .get('switchyard_connections{kind="dasf_producer"}') == 0)


def test_metrics_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    """With METRICS_TOKEN set, /metrics answers 403 without it and 200 with it."""
    from tests.servers import migrated_database_url

    proc = start_server(migrated_database_url(tmp_path, "token"), METRICS_TOKEN="scrape-me")
    try:
        assert fetch(proc.http + "/metrics")[0] == 403
        assert fetch(proc.http + "/metrics", {"Authorization": "Bearer wrong"})[0] == 403
        assert fetch(proc.http + "/metrics", {"Authorization": "Bearer scrape-me"})[0] == 200
    finally:
        proc.stop()


@pytest.mark.database_agnostic
def test_error_reasons_fall_into_a_bounded_set() -> None:
    """Error reasons map to a fixed set of categories, "other" for the rest."""
    assert error_category("frame is larger than 100 bytes") == "frame_size"
    assert error_category("unsupported control frame type 'x'") == "unsupported"
    assert error_category("something new") == "other"


def dashboard_metrics() -> set[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    names = set()
    for expr in exprs:
        names.update(re.findall(r"\b(switchyard_[a-z_]+)\b", expr))
    return names


def test_the_dashboard_queries_only_metrics_that_exist(server: ServerProcess) -> None:
    """Every metric deploy/grafana/switchyard.json queries is in /metrics output."""
    served = metric_names(fetch(server.http + "/metrics")[1])
    wanted = dashboard_metrics()
    assert wanted and wanted <= served, wanted - served


@pytest.fixture(scope="module")
def json_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server logging in JSON (SWITCHYARD_LOG_FORMAT=json) on the session database, shared by this
    module's JSON tests: one start-up, and each test reads only the lines of its own requests."""
    proc = start_server(os.environ["DATABASE_URL"], SWITCHYARD_LOG_FORMAT="json")
    yield proc
    proc.stop()


async def test_json_log_lines_are_objects_with_session_ends(json_server: ServerProcess) -> None:
    """SWITCHYARD_LOG_FORMAT=json: access lines are JSON objects, and a websocket's end has its own
    line with who, the close code, the duration and the frames."""
    proc = json_server
    slug = make_topic()
    assert fetch(proc.http + "/healthz")[0] == 200
    producer = await connect(proc.ws + slug)
    await send_json(producer, {"not": "a message"})
    await recv_json(producer)
    await producer.close()

    def session_ends() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in proc.output if line.startswith("{")]
        return [line for line in lines if line.get("event") == "session_end" and slug in line.get("path", "")]

    await eventually(session_ends, message="a session_end line")
    end = session_ends()[0]
    assert (end["principal"], end["close_code"], end["frames_in"], end["frames_out"]) == ("anonymous", 1000, 1, 1)
    assert end["duration_ms"] >= 0 and end["path"] == f"/ws/{slug}"
    http = [json.loads(line) for line in proc.output if line.startswith("{") and "/healthz" in line]
    assert http and http[0]["status"] == 200 and http[0]["logger"] == "switchyard.access"


async def access_line(server: ServerProcess, *needles: str) -> str:
    """The one access line (text format) holding every needle, once it is logged."""
    def found() -> list[str]:
        return [line for line in server.output if "switchyard.access" in line and all(n in line for n in needles)]

    await eventually(found, message=f"an access line with {needles}")
    assert len(found()) == 1, found()
    return found()[0]


async def test_api_access_line_names_the_tokens_principal(server: ServerProcess) -> None:
    """An HTTP API request's access line names the principal its token authenticated."""
    user, marker = make_user(), unique("probe")
    assert call(server, f"/tokens?probe={marker}", key=make_token(user))[0] == 200
    await access_line(server, f" GET /api/v1/tokens?probe={marker} 200 user:{user.pk} ")


async def test_anonymous_api_access_line_says_anonymous(server: ServerProcess) -> None:
    """An API request without credentials is logged as the anonymous principal."""
    marker = unique("probe")
    assert call(server, f"/topics?probe={marker}")[0] == 200
    await access_line(server, f" GET /api/v1/topics?probe={marker} 200 anonymous ")


async def test_admin_access_line_names_the_session_user(server: ServerProcess) -> None:
    """A request outside the API that looked up its session user (the admin) is logged as that user."""
    from django.test import Client

    user, marker = make_user(is_staff=True, is_superuser=True), unique("probe")
    client = Client()
    client.force_login(user)
    cookie = {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}
    assert fetch(f"{server.http}/admin/?probe={marker}", cookie)[0] == 200
    await access_line(server, f" GET /admin/?probe={marker} 200 user:{user.pk} ")


async def test_bulk_operations_have_access_lines(server: ServerProcess) -> None:
    """Each operation of a bulk request has an access line with its status and caller, marked bulk."""
    user, marker = make_user(), unique("probe")
    operations = [{"method": "GET", "path": "tokens", "query": f"probe={marker}"},
                  {"method": "GET", "path": ["topics", marker]}]
    assert call(server, "/_bulk/", "PUT", make_token(user), operations)[0] == 200
    first = await access_line(server, f" GET /api/v1/tokens?probe={marker} 200 user:{user.pk} ")
    second = await access_line(server, f" GET /api/v1/topics/{marker} 404 user:{user.pk} ")
    assert first.rstrip().endswith(" ms bulk") and second.rstrip().endswith(" ms bulk")
    await access_line(server, f" PUT /api/v1/_bulk/ 200 user:{user.pk} ")


async def test_json_access_lines_name_the_caller_and_bulk_operations(json_server: ServerProcess) -> None:
    """SWITCHYARD_LOG_FORMAT=json: an API request's line has the caller's principal, and each bulk
    operation a line of its own (event bulk_operation) with method, path, status, principal, duration."""
    proc = json_server
    user = make_user(is_superuser=True)
    operations = [{"method": "post", "path": "tokens", "data": {"comment": "from a bulk"}}]
    assert call(proc, "/_bulk/", "POST", make_token(user), operations)[0] == 200

    def access() -> list[dict[str, Any]]:
        # No other test of the module calls the API on this server: every /api/v1/ line is this test's.
        lines = [json.loads(line) for line in proc.output if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "switchyard.access" and "/api/v1/" in line["path"]]

    await eventually(lambda: len(access()) == 2, message="the bulk's line and its operation's")
    operation, bulk = access()
    assert {k: operation[k] for k in ("event", "method", "path", "status", "principal")} == {
        "event": "bulk_operation", "method": "POST", "path": "/api/v1/tokens", "status": 201,
        "principal": f"user:{user.pk}"}
    assert operation["duration_ms"] >= 0
    assert (bulk["path"], bulk["status"], bulk["principal"]) == ("/api/v1/_bulk/", 200, f"user:{user.pk}")
    assert "event" not in bulk


@pytest.mark.database_agnostic
def test_every_consumer_kind_is_a_known_label() -> None:
    """Each websocket consumer's metrics_kind is one of the gauge's fixed labels."""
    from app.server.metrics import CONNECTION_KINDS
    from consumers import (
        not_found,
        producer,
        pulsar_consumer,
        pulsar_producer,
        pulsar_reader,
        status_ping,
        status_viewer,
        subscriber,
        work_requests,
        worker,
    )

    classes = [not_found.NotFoundConsumer, producer.TopicProducer, pulsar_consumer.PulsarConsumer,
               pulsar_producer.PulsarProducer, pulsar_reader.TopicReader, status_ping.StatusPingConsumer,
               status_viewer.StatusViewerConsumer, subscriber.TopicConsumer, work_requests.WorkRequestsConsumer,
               worker.WorkerConsumer]
    assert {cls.metrics_kind for cls in classes} <= set(CONNECTION_KINDS)
