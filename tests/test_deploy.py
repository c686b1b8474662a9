"""The deployment files in deploy/: the nginx config passes ``nginx -t`` and proxies websockets and client
addresses to a real server, the systemd units pass ``systemd-analyze verify``, and compose.yaml, the
Dockerfile and the environment example agree with each other and with the settings."""

from __future__ import annotations

import asyncio
import configparser
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from django.conf import settings

from tests.protocol import OPEN, TIMEOUT_S, connect, make_topic, publish, recv_json, subscribe, unique
from tests.servers import ROOT, ServerProcess, start_server

DEPLOY = ROOT / "deploy"
NGINX = DEPLOY / "nginx"
UNITS = ("switchyard.service", "switchyard@.service", "switchyard-migrate.service")
SERVER_IMAGE_PORT = 8000
# Read from the environment by something other than the settings modules: uvicorn's trusted proxies.
OTHER_ENVIRONMENT = {"FORWARDED_ALLOW_IPS"}


def require_program(name: str, install: str) -> str:
    """The program's path; skipped when absent, except under CI=true, where that is a failure."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None)
    if path is not None:
        return path
    reason = f"{name} is not installed ({install})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true requires it")
    pytest.skip(reason)


def settings_names() -> set[str]:
    """Environment variables the settings modules read."""
    sources = (ROOT / "settings" / name for name in ("base.py", "cqrs.py", "work.py"))
    return {found for source in sources for found in re.findall(r'env_\w+\(\s*"([A-Z][A-Z0-9_]*)"', source.read_text())}


# --- nginx ------------------------------------------------------------------------------------


def nginx_conf(directory: Path, *, upstream: str, listen: int | None = None, static_root: Path | None = None) -> Path:
    """A main nginx.conf in ``directory`` around deploy/nginx/switchyard.conf (all paths in ``directory``,
    so it runs as any user); with ``listen``, the server block listens on 127.0.0.1:<listen>; with
    ``static_root``, /static/ is served from there."""
    site = (NGINX / "switchyard.conf").read_text()
    if static_root is not None:
        site, count = re.subn(r"alias /opt/switchyard/staticfiles/;", f"alias {static_root}/;", site)
        assert count == 1, "switchyard.conf no longer serves /opt/switchyard/staticfiles/"
    if listen is not None:
        site = re.sub(r"listen \[::\]:80;\n", "", site)
        site, count = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen};", site)
        assert count == 1, "switchyard.conf no longer listens on port 80"
    (directory / "site.conf").write_text(site)
    (directory / "upstream.conf").write_text(upstream)
    temp = "\n".join(f"    {kind}_temp_path {directory / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = directory / "nginx.conf"
    conf.write_text(
        f"worker_processes 1;\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n"
        f"    include {directory / 'upstream.conf'};\n    include {directory / 'site.conf'};\n}}\n"
    )
    return conf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[Any]:
    """Starts nginx with deploy/nginx/switchyard.conf in front of a server; returns its base URL."""
    binary = require_program("nginx", "make deploy-tools")
    started: list[subprocess.Popen[str]] = []

    def start(server: ServerProcess) -> str:
        port = free_port()
        upstream = f"upstream switchyard {{ server 127.0.0.1:{server.port}; keepalive 4; }}\n"
        conf = nginx_conf(tmp_path, upstream=upstream, listen=port, static_root=settings.STATIC_ROOT)
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", f"{tmp_path}/", "-g", "daemon off;"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"nginx exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("nginx did not listen within 10 s") from None
                time.sleep(0.02)  # bounded-poll
        return f"127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.database_agnostic
def test_nginx_config_is_valid(tmp_path: Path) -> None:
    """``nginx -t`` accepts switchyard.conf with the upstream of processes on this host."""
    binary = require_program("nginx", "make deploy-tools")
    conf = nginx_conf(tmp_path, upstream=(NGINX / "upstream.conf").read_text())
    done = subprocess.run([binary, "-t", "-c", str(conf), "-p", f"{tmp_path}/"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


async def test_nginx_proxies_websockets_and_http(server: ServerProcess, nginx_in_front: Any) -> None:
    """Through nginx a consumer gets what a producer publishes, and HTTP requests reach the server."""
    base = nginx_in_front(server)
    slug = make_topic()
    consumer = await subscribe(f"ws://{base}/ws/", slug)
    producer = await connect(f"ws://{base}/ws/{slug}")
    ack = await publish(producer, context=7)
    assert ack["result"] == "ok" and ack["context"] == 7
    delivered = await recv_json(consumer)
    assert delivered["messageId"] == ack["messageId"]
    with await asyncio.to_thread(urllib.request.urlopen, f"http://{base}/healthz", timeout=TIMEOUT_S) as answer:
        assert answer.status == 200 and json.loads(answer.read()) == {"status": "ok"}


@pytest.mark.database_agnostic
def test_nginx_serves_collected_static_files(server: ServerProcess, nginx_in_front: Any) -> None:
    """nginx serves /static/ itself: the collected .gz copy to a client accepting gzip, cached for an hour only."""
    base = nginx_in_front(server)
    request = urllib.request.Request(f"http://{base}/static/admin/css/base.css", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
        assert answer.headers["Content-Encoding"] == "gzip", answer.headers
        assert answer.headers["Cache-Control"] == "max-age=3600", answer.headers
        body = gzip.decompress(answer.read())
    assert body == (Path(settings.STATIC_ROOT) / "admin" / "css" / "base.css").read_bytes()


async def _open_from(url: str, address: str) -> Any:
    ws = await websockets.connect(url, local_addr=(address, 0), open_timeout=TIMEOUT_S)
    OPEN.append(ws)
    return ws


async def test_nginx_passes_the_client_address(nginx_in_front: Any) -> None:
    """Behind nginx, per-address limits count the client's address (X-Forwarded-For), not nginx's."""
    server = start_server(os.environ["DATABASE_URL"], MAX_CONNECTIONS_PER_ADDRESS="1")
    try:
        base = nginx_in_front(server)
        url = f"ws://{base}/ws/{unique('nothing')}/sub"  # waits silently for a topic that never comes
        await _open_from(url, "127.0.0.1")
        await _open_from(url, "127.0.0.2")  # another client: admitted although nginx's address is the same
        with pytest.raises(websockets.InvalidStatus) as refused:
            await _open_from(url, "127.0.0.1")  # the first client's second socket: over its limit
        assert refused.value.response.status_code == 429
    finally:
        for ws in list(OPEN):
            await ws.close()
        OPEN.clear()
        server.stop()


@pytest.mark.database_agnostic
def test_compose_upstream_names_the_compose_servers() -> None:
    """upstream-compose.conf lists exactly compose.yaml's server services, on the port their image serves."""
    servers = {name for name, service in compose_services().items() if runs_server(service)}
    listed = set(re.findall(r"^\s*server\s+([\w.-]+:\d+);", (NGINX / "upstream-compose.conf").read_text(), re.M))
    assert listed == {f"{name}:{SERVER_IMAGE_PORT}" for name in servers}
    assert len(servers) >= 2


# --- systemd ----------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text())
    return parser


@pytest.mark.database_agnostic
@pytest.mark.parametrize("name", ["switchyard.service", "switchyard@.service"])
def test_server_units_run_serve_unprivileged(name: str) -> None:
    """The server units run ``manage.py serve`` from the venv as an unprivileged user, after the
    migrations, with the environment file, restarted on failure and hardened."""
    parsed = unit(name)
    service = parsed["Service"]
    assert service["User"] not in ("", "root")
    assert re.fullmatch(r"/opt/switchyard/\.venv/bin/python manage\.py serve --host 127\.0\.0\.1 --port \S+",
                        service["ExecStart"])
    assert service["EnvironmentFile"] == "/etc/switchyard/switchyard.env"
    assert service["Restart"] == "on-failure"
    for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert service[option] in ("yes", "strict"), option
    assert "switchyard-migrate.service" in parsed["Unit"]["Requires"]
    assert "switchyard-migrate.service" in parsed["Unit"]["After"]
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    if name.endswith("@.service"):
        assert service["ExecStart"].endswith("--port %i")


@pytest.mark.database_agnostic
def test_migration_unit_runs_once() -> None:
    """The migration unit is a oneshot running ``migrate`` with the same environment file."""
    service = unit("switchyard-migrate.service")["Service"]
    assert service["Type"] == "oneshot" and service["RemainAfterExit"] == "yes"
    assert service["ExecStart"].endswith("manage.py migrate --noinput")
    assert service["EnvironmentFile"] == "/etc/switchyard/switchyard.env"


@pytest.mark.database_agnostic
def test_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the units and warns about nothing (the venv's python is
    replaced by this one, which exists)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units were checked with configparser only")
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/switchyard/.venv/bin/python", sys.executable)
        (tmp_path / name).write_text(text)
    done = subprocess.run([analyze, "verify", *(str(tmp_path / name) for name in UNITS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


# --- compose, Dockerfile, environment -----------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose_services() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    assert isinstance(services, dict)
    return services


def runs_server(service: dict[str, Any]) -> bool:
    """A service of the Switchyard image that serves (the image's default command)."""
    return "build" in service and "command" not in service


@pytest.mark.database_agnostic
def test_compose_has_every_part() -> None:
    """compose.yaml runs two or more servers, a one-off migration, PostgreSQL, Redis, RabbitMQ and nginx."""
    services = compose_services()
    for name in ("postgres", "redis", "rabbitmq", "migrate", "nginx"):
        assert name in services, name
    assert sum(runs_server(s) for s in services.values()) >= 2
    assert "migrate" in services["migrate"]["command"][-1]
    assert "8080:80" in services["nginx"]["ports"]


@pytest.mark.database_agnostic
def test_compose_references_resolve() -> None:
    """Every depends_on names a service, every named volume is declared, every bind mount and the
    Dockerfile exist, and servers start only after the migration succeeded."""
    document = compose()
    services = document["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", ()):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", ()):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in document["volumes"], f"{name} uses undeclared volume {source}"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file()
        if runs_server(service):
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.database_agnostic
def test_compose_environment_names_are_settings() -> None:
    """The servers' environment sets only variables the settings (or uvicorn) read: a misspelt one
    would be ignored silently."""
    known = settings_names() | OTHER_ENVIRONMENT
    for name, service in compose_services().items():
        if "build" in service:
            unknown = set(service["environment"]) - known
            assert not unknown, f"{name}: {sorted(unknown)}"


@pytest.mark.database_agnostic
def test_environment_example_names_are_settings() -> None:
    """deploy/switchyard.env.example names only variables the settings (or uvicorn) read."""
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (DEPLOY / "switchyard.env.example").read_text(), re.M))
    assert {"DATABASE_URL", "REDIS_URL", "AMQP_URL", "SWITCHYARD_SECRET_KEY"} <= names
    assert not names - settings_names() - OTHER_ENVIRONMENT, sorted(names - settings_names() - OTHER_ENVIRONMENT)


@pytest.mark.database_agnostic
def test_dockerfile_copies_the_packages_and_serves_unprivileged() -> None:
    """The image holds every package pyproject.toml installs and manage.py, and serves on port 8000
    as a user of its own."""
    text = (DEPLOY / "Dockerfile").read_text()
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[([^]]*)\]', pyproject)
    where = re.search(r'where = \[([^]]*)\]', pyproject)
    assert packages is not None and where is not None
    # A package is found at the top or in another directory pyproject.toml names (the client SDK in client/).
    roots = [Path(root) for root in re.findall(r'"([^"]+)"', where.group(1))]
    for package in re.findall(r'"(\w+)\*"', packages.group(1)):
        homes = [(root / package).as_posix() for root in roots if (ROOT / root / package).is_dir()]
        assert homes and any(home in copied or home.split("/")[0] in copied for home in homes), package
    assert "manage.py" in copied
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert f'"--port", "{SERVER_IMAGE_PORT}"' in text and '"--host", "0.0.0.0"' in text


@pytest.mark.database_agnostic
def test_compose_config_with_docker(tmp_path: Path) -> None:
    """``docker compose config`` accepts compose.yaml (where the compose plugin is installed)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed; compose.yaml was checked structurally only")
    done = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SWITCHYARD_SECRET_KEY": "test"})
    assert done.returncode == 0, done.stderr

