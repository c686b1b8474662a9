"""``manage.py serve``: its help, its banner, and one clear line when it cannot listen."""

from __future__ import annotations

import errno
import re
import socket
import subprocess
import sys
import urllib.request

import pytest

from app.server.serving import describe_bind_error
from tests.protocol import connect, make_topic, publish, recv_json, subscribe
from tests.servers import READY, ROOT, ServerProcess, server_env

# TEST-NET-1 (RFC 5737): never an address of this machine, and binding to it sends nothing.
FOREIGN_ADDRESS = "192.0.2.1"


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "manage.py", "serve", *args], cwd=ROOT,
                          env=server_env(os.environ["DATABASE_URL"]), capture_output=True, text=True, timeout=60)


@pytest.mark.database_agnostic
def test_help_shows_every_default():
    """`serve --help` gives every option of its own a help text with its default."""
    from app.server.management.commands.serve import Command

    parser = Command().create_parser("manage.py", "serve")
    own = [action for action in parser._actions if action.dest in ("host", "port", "log_level")]
    assert len(own) == 3
    help_text = parser.format_help()
    for action in own:
        assert action.help and "%(default)s" in action.help, action.dest
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: warning)"):
        assert default in " ".join(help_text.split()), help_text


@pytest.mark.database_agnostic
def test_busy_port_is_one_line():
    """A port in use ends `serve` with exit 1 and one line on stderr saying so, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve("--port", str(port))
    assert done.returncode == 1
    assert done.stderr == (f"Switchyard cannot listen on 127.0.0.1:{port}: address already in use "
                           "(another server running? use --port or PORT=)\n")
    assert READY not in done.stdout


@pytest.mark.database_agnostic
def test_address_not_on_this_machine_is_one_line():
    """A host address this machine does not have ends `serve` with exit 1 and one line on stderr."""
    done = serve("--host", FOREIGN_ADDRESS, "--port", "0")
    assert done.returncode == 1
    assert done.stderr == (f"Switchyard cannot listen on {FOREIGN_ADDRESS}:0: no such address on this machine "
                           "(use --host or HOST=, e.g. 127.0.0.1 or 0.0.0.0)\n")


@pytest.mark.database_agnostic
def test_port_out_of_range_is_one_line():
    """A port above 65535 ends `serve` with exit 1 and one line on stderr."""
    done = serve("--port", "70000")
    assert (done.returncode, done.stderr.count("\n")) == (1, 1) and "the port must be 0-65535" in done.stderr


@pytest.mark.database_agnostic
def test_empty_host_is_refused():
    """An empty host (which the socket API reads as every interface) ends `serve` with one line, exit 1."""
    done = serve("--host", "", "--port", "0")
    assert (done.returncode, done.stderr.count("\n")) == (1, 1) and "needs a host" in done.stderr


@pytest.mark.database_agnostic
def test_bracketed_ipv6_host_is_understood():
    """`--host [::1]`, written as in a URL, listens on ::1."""
    from app.server.serving import bind

    sock = bind("[::1]", 0)
    with sock:
        assert sock.getsockname()[0] == "::1"


@pytest.mark.database_agnostic
def test_permission_denied_is_explained():
    """A port the user may not bind (below 1024, not root) is explained; an unknown host too."""
    assert describe_bind_error("127.0.0.1", 80, PermissionError(errno.EACCES, "Permission denied")) == (
        "Switchyard cannot listen on 127.0.0.1:80: permission denied (ports below 1024 need root; use --port or PORT=)")
    assert describe_bind_error("::1", 80, socket.gaierror(-2, "Name or service not known")).startswith(
        "Switchyard cannot listen on [::1]:80: unknown host")


def banner_urls(server: ServerProcess) -> list[str]:
    lines = server.output[:next(i for i, line in enumerate(server.output) if line.startswith(READY))]
    return [url for line in lines for url in re.findall(r"(?:http|ws)://\S+", line)]


def test_banner_lists_every_entry_point(server: ServerProcess):
    """The banner shows the status page, admin, API docs, health check, DASF, Pulsar, status feed and worker URLs."""
    base = f"127.0.0.1:{server.port}"
    urls = banner_urls(server)
    for url in (f"http://{base}/", f"http://{base}/admin/", f"http://{base}/api/v1/docs", f"http://{base}/healthz",
                f"ws://{base}/ws/<topic>", f"ws://{base}/ws/<topic>/<subscription>",
                f"ws://{base}/ws/v2/producer/persistent/<tenant>/<namespace>/<topic>",
                f"ws://{base}/ws/v2/consumer/persistent/<tenant>/<namespace>/<topic>/<subscription>",
                f"ws://{base}/ws/workers/"):
        assert url in urls, urls


@pytest.mark.parametrize("path", ["/", "/admin/", "/api/v1/docs", "/healthz"])
def test_banner_pages_answer(server: ServerProcess, path: str):
    """Each page the banner lists answers 200 (the admin after its redirect to the login)."""
    url = next(u for u in banner_urls(server) if u == f"http://127.0.0.1:{server.port}{path}")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200


async def test_banner_pulsar_urls_reach_a_topic(server: ServerProcess):
    """The banner's Pulsar producer and consumer shapes, filled in, carry a message."""
    urls = banner_urls(server)
    slug = make_topic()

    def filled(kind: str) -> str:
        url = next(u for u in urls if f"/ws/v2/{kind}/" in u)
        return (url.replace("<tenant>", "public").replace("<namespace>", "default").replace("<topic>", slug)
                .replace("<subscription>", "banner"))

    consumer = await subscribe(filled("consumer").removesuffix(f"{slug}/banner"), slug, "banner")
    ack = await publish(await connect(filled("producer")), context="banner")
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
