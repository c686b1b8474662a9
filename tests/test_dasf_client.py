"""End-to-end: the real, unmodified demessaging client (backend module and requester) as subprocesses."""

from __future__ import annotations

import json
import subprocess
import time

from tests.dasf_client import (
    REQUEST_TIMEOUT_S,
    Modules,
    answer,
    api_info_of,
    client_env,
    command,
    header_args,
    pulsar_args,
    result_of,
    send_request,
    wait_for,
    ws_args,
)
from tests.protocol import make_token, make_topic, make_user
from tests.servers import ROOT, ServerProcess


def test_module_answers_over_websocket_url(server: ServerProcess, modules: Modules) -> None:
    """A module and a requester using --websocket-url get both functions answered."""
    slug = make_topic()
    modules.start_connected(slug, ws_args(server))
    assert answer(slug, ws_args(server), {"func_name": "hello_world"}) == "Hello World!"
    assert answer(slug, ws_args(server), {"func_name": "add", "a": 2, "b": 3}) == 5


def test_module_answers_over_pulsar_paths(server: ServerProcess, modules: Modules) -> None:
    """A module and a requester using PulsarConfig (-H/-p, /ws/v2/... paths) get both functions answered."""
    slug = make_topic()
    modules.start_connected(slug, pulsar_args(server))
    assert answer(slug, pulsar_args(server), {"func_name": "hello_world"}) == "Hello World!"
    assert answer(slug, pulsar_args(server), {"func_name": "add", "a": 2, "b": 3}) == 5


def test_request_waits_for_module_to_start(server: ServerProcess, modules: Modules) -> None:
    """A request sent while no module runs is stored and answered once the module starts."""
    from app.broker.models import Message

    slug = make_topic()
    request = subprocess.Popen(
        command(slug, ws_args(server), "send-request", json.dumps({"func_name": "add", "a": 20, "b": 22})),
        cwd=ROOT, env=client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: Message.objects.filter(topic__slug=slug).exists() or request.poll() is not None,
                 "the request to be stored")
        assert request.poll() is None, "send-request exited before a module ran"
        modules.start(slug, ws_args(server))
        try:
            stdout, stderr = request.communicate(timeout=REQUEST_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError("stored request was not answered:\n" + modules.output()) from None
        assert request.returncode == 0, stdout + stderr
        assert result_of(stdout) == 42
    finally:
        if request.poll() is None:
            request.kill()
            request.communicate(timeout=10)


def private_topic() -> tuple[str, str]:
    """A topic only one user may produce to and consume; its slug and that user's token."""
    user = make_user()
    key = make_token(user)
    return make_topic(public=False, anonymous=False, consumers=(user,), producers=(user,)), key


def test_private_topic_refuses_requester_without_token(server: ServerProcess, modules: Modules) -> None:
    """On a private topic a requester without a token fails fast instead of hanging."""
    slug, key = private_topic()
    modules.start_connected(slug, [*ws_args(server), *header_args(key)])
    started = time.monotonic()
    try:
        refused = send_request(slug, ws_args(server), {"func_name": "hello_world"})
    except subprocess.TimeoutExpired:
        raise AssertionError("send-request without a token hung instead of failing") from None
    assert time.monotonic() - started < REQUEST_TIMEOUT_S
    assert refused.returncode != 0
    assert "not allowed to publish" in refused.stdout + refused.stderr


def test_private_topic_serves_requester_with_token(server: ServerProcess, modules: Modules) -> None:
    """On a private topic a module and a requester that send the authorization header work."""
    slug, key = private_topic()
    with_token = [*ws_args(server), *header_args(key)]
    modules.start_connected(slug, with_token)
    assert answer(slug, with_token, {"func_name": "add", "a": 2, "b": 3}) == 5


def test_api_info_probe_fills_topic(server: ServerProcess, modules: Modules) -> None:
    """The module's answer to the api_info probe is stored in Topic.api_info."""
    slug = make_topic()
    assert api_info_of(slug) == {}
    proc = modules.start(slug, ws_args(server))
    info = wait_for(lambda: api_info_of(slug) or proc.poll() is not None, "Topic.api_info")
    assert isinstance(info, dict), "module exited:\n" + modules.output()
    functions = {f["name"] for f in info.get("functions", [])}
    assert functions == {"hello_world", "add"}, info
