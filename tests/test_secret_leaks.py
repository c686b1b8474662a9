"""Secrets are shown once, when created, and never again: not in the server's log (access log on, DEBUG),
not in a refusal, not in any later answer. One server; every kind of secret (user tokens, worker keys,
the admin session and its CSRF token) created over every interface that creates it and used, right,
wrong and revoked, over every interface that takes it."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.core.management import call_command
from websockets.exceptions import InvalidStatus, WebSocketException

from tests.api_client import call
from tests.browser import Answer, Browser
from tests.protocol import auth, connect, make_token, make_topic, make_user, set_password, unique
from tests.pulsar_client import consumer_url
from tests.servers import ServerProcess, start_server
from tests.test_admin import TOKENS, add_token, shown_key

pytestmark = [
    # What the server logs comes from the request scope and its own code, whatever the database.
    pytest.mark.database_agnostic,
    # At DEBUG, a socket closed while its frames drain is noted with its traceback (consumers/outbound.py).
    pytest.mark.server_errors(r"DEBUG consumers\.outbound: send failed; dropping outbound queue"),
]

# A window this long of a secret found anywhere is a leak. Shorter: the 8-character prefix a token is
# listed by (app/auth/models.py) is public by design, and a 10-character window always reaches past it.
WINDOW = 10


@dataclass
class Exercised:
    server: ServerProcess
    secrets: dict[str, str] = field(default_factory=dict)
    # What the server answered to each use of a secret (refusals included), and what the creating
    # commands printed besides the key they print on stdout.
    answers: dict[str, str] = field(default_factory=dict)


def leaks(text: str, named: dict[str, str]) -> list[str]:
    """The names of the secrets a window of which appears in ``text``."""
    return [name for name, secret in named.items()
            if any(secret[i:i + WINDOW] in text for i in range(len(secret) - WINDOW + 1))]


def command(*args: str) -> tuple[str, str]:
    """A management command as an admin runs it (in this process: a process of its own costs a Django
    start-up, seconds on a loaded machine): its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


async def handshake(url: str, headers: dict[str, str] | None = None) -> str:
    """Open a websocket, read what comes within a moment, close; the refusal's status and body, or the frames."""
    try:
        ws = await connect(url, headers)
    except InvalidStatus as refused:
        response = refused.value.response if hasattr(refused, "value") else refused.response
        return f"{response.status_code} {response.body.decode(errors='replace') if response.body else ''}"
    frames: list[str] = []
    try:
        # A refusal in band (an error frame, a worker's ``rejected``) follows the handshake at once.
        async with asyncio.timeout(0.3):
            async for frame in ws:
                frames.append(str(frame))
    except (TimeoutError, WebSocketException):
        pass
    await ws.close()
    return "\n".join(frames)


def http(browser: Browser, path: str, key: str | None = None, scheme: str = "Token") -> str:
    answer: Answer = browser.request(path, headers={"Authorization": f"{scheme} {key}"} if key else {})
    return f"{answer.status} {answer.headers} {answer.body.decode(errors='replace')}"


async def use_everywhere(ex: Exercised, name: str, key: str, slug: str, pulsar_slug: str) -> None:
    """Use ``key`` on every interface that takes a secret, noting each answer."""
    server, browser = ex.server, Browser(ex.server.http)
    uses = {
        # A subscription of its own each: one held by an earlier use would refuse before authentication.
        "dasf query": handshake(f"{server.ws}{slug}/{unique('s')}?token={key}"),
        "dasf header": handshake(f"{server.ws}{slug}/{unique('s')}", auth(key)),
        "dasf bearer": handshake(f"{server.ws}{slug}/{unique('s')}", {"Authorization": f"Bearer {key}"}),
        "pulsar query": handshake(consumer_url(server, pulsar_slug, unique("s"), query=f"token={key}")),
        "pulsar header": handshake(consumer_url(server, pulsar_slug, unique("s")), auth(key)),
        "worker socket header": handshake(f"{server.ws}workers/", auth(key)),
        "worker socket query": handshake(f"{server.ws}workers/?token={key}"),
    }
    for use, answer in zip(uses, await asyncio.gather(*uses.values()), strict=True):
        ex.answers[f"{name}: {use}"] = answer
    ex.answers[f"{name}: api bearer"] = http(browser, "/api/v1/tokens", key, "Bearer")
    ex.answers[f"{name}: api token"] = http(browser, "/api/v1/topics", key)
    ex.answers[f"{name}: worker api"] = http(browser, "/api/v1/worker", key)
    ex.answers[f"{name}: metrics"] = http(browser, "/metrics", key, "Bearer")


@pytest.fixture(scope="module")
def exercised(django_db_blocker: pytest.FixtureRequest) -> Iterator[Exercised]:
    # Every bad key is looked up and refused as such, not cut short by the failed-lookup limit (429).
    metrics_token = secrets.token_urlsafe(32)
    server = start_server(os.environ["DATABASE_URL"], ACCESS_LOG="true", SWITCHYARD_LOG_LEVEL="DEBUG",
                          FAILED_AUTH_BURST_PER_ADDRESS="100000", METRICS_TOKEN=metrics_token)
    ex = Exercised(server, {"metrics token": metrics_token})
    try:
        with django_db_blocker.unblock():  # type: ignore[attr-defined]
            asyncio.run(_exercise(ex))
        yield ex
    finally:
        server.stop()


async def _exercise(ex: Exercised) -> None:
    server = ex.server
    admin = make_user(is_superuser=True, is_staff=True)
    password = set_password(admin)
    browser = Browser(server.http)
    assert browser.admin_login(admin.username, password).status == 302
    ex.secrets["session"] = browser.cookie("sessionid") or ""
    ex.secrets["csrf"] = browser.cookie("csrftoken") or ""
    assert ex.secrets["session"] and ex.secrets["csrf"]
    ex.secrets["admin key"] = make_token(admin)

    # Created over the HTTP API, the admin and the management commands.
    status, made = call(server, "/tokens", "POST", ex.secrets["admin key"], {"comment": unique("leak")})
    assert status == 201, made
    ex.secrets["api token"], api_token_id = made["key"], made["id"]
    ex.secrets["admin token"] = shown_key(add_token(browser, admin, unique("leak")))
    username = unique("leak")
    ex.secrets["command token"], ex.answers["createtoken stderr"] = command(
        "createtoken", username, "--create-user")
    status, made = call(server, "/workers", "POST", ex.secrets["admin key"], {"name": unique("leak")})
    assert status == 201, made
    ex.secrets["api worker"], api_worker_id = made["key"], made["id"]
    ex.secrets["command worker"], ex.answers["createworker stderr"] = command("createworker", unique("leak"))

    # Not open to anonymous consumers: a wrong or revoked key is refused, not served as anonymous.
    slug = make_topic(anonymous=False, producers=(admin,), consumers=(admin,))
    pulsar_slug = make_topic(anonymous=False, dasf=False, producers=(admin,), consumers=(admin,))
    for name in ("admin key", "api token", "admin token", "command token", "api worker", "command worker"):
        await use_everywhere(ex, name, ex.secrets[name], slug, pulsar_slug)
    ex.secrets["wrong"] = f"wrong-{unique('key')}-{unique('key')}"
    await use_everywhere(ex, "wrong", ex.secrets["wrong"], slug, pulsar_slug)

    # Revoked: the API token disabled, the API worker disabled; each used again.
    assert call(server, f"/tokens/{api_token_id}/disable", "POST", ex.secrets["admin key"])[0] == 200
    assert call(server, f"/workers/{api_worker_id}/disable", "POST", ex.secrets["admin key"])[0] == 200
    await use_everywhere(ex, "revoked api token", ex.secrets["api token"], slug, pulsar_slug)
    await use_everywhere(ex, "revoked api worker", ex.secrets["api worker"], slug, pulsar_slug)
    ex.answers["disabletoken"] = "\n".join(command("disabletoken", ex.secrets["command token"]))
    await use_everywhere(ex, "revoked command token", ex.secrets["command token"], slug, pulsar_slug)
    assert not [use for use, answer in ex.answers.items() if answer.startswith("429")]

    # The session on the websocket and the API, as the admin's pages use it.
    session = {"Cookie": f"sessionid={ex.secrets['session']}; csrftoken={ex.secrets['csrf']}"}
    ex.answers["session: dasf"] = await handshake(f"{server.ws}{slug}/s", session)
    ex.answers["session: api"] = http(browser, "/api/v1/tokens")
    ex.answers["session: api write"] = str(browser.send_json("/api/v1/tokens", value={"comment": "x"},
                                                             headers={"X-CSRFToken": "wrong"}).body)


def later_answers(ex: Exercised) -> dict[str, str]:
    """Every answer that could show a secret after its creation, fetched once everything was used."""
    from app.auth.models import Token
    from app.work.models import Worker

    server, key = ex.server, ex.secrets["admin key"]
    browser = Browser(server.http)
    assert browser.admin_login(*_new_admin()).status == 302
    pages = {
        "token list": "/api/v1/tokens?limit=200",
        "worker list": "/api/v1/workers?limit=200",
        "openapi": "/api/v1/openapi.json",
        "api docs": "/api/v1/docs",
        "status page": "/",
    }
    seen = {name: http(Browser(server.http), path, key) for name, path in pages.items()}
    seen["metrics"] = http(Browser(server.http), "/metrics", ex.secrets["metrics token"], "Bearer")
    for worker in Worker.objects.select_related("token").order_by("-pk")[:4]:
        seen[f"worker {worker.pk}"] = http(Browser(server.http), f"/api/v1/workers/{worker.pk}", key)
        seen[f"admin worker {worker.pk}"] = http(browser, f"/admin/work/worker/{worker.pk}/change/")
    for token in Token.objects.order_by("-pk")[:12]:
        seen[f"admin token {token.pk}"] = http(browser, f"{TOKENS}{token.pk}/change/")
    seen["admin token list"] = http(browser, TOKENS)
    seen["admin worker list"] = http(browser, "/admin/work/worker/")
    assert {name: text[:3] for name, text in seen.items() if not text.startswith("200 ")} == {}
    return seen


def _new_admin() -> tuple[str, str]:
    user = make_user(is_superuser=True, is_staff=True)
    return user.username, set_password(user)


def test_no_secret_in_the_server_log(exercised: Exercised) -> None:
    """No token, worker key, session id or CSRF token, used right, wrong or revoked, is in the server's log."""
    log = "\n".join(exercised.server.output)
    assert "switchyard.access" in log  # the access log was on
    assert leaks(log, exercised.secrets) == []


def test_no_secret_in_the_answers_to_its_use(exercised: Exercised) -> None:
    """No answer to a use of a secret (accepted or refused) and no creating command's notice repeats it."""
    found = {name: leaks(text, exercised.secrets) for name, text in exercised.answers.items()}
    assert {name: secrets for name, secrets in found.items() if secrets} == {}


def test_no_secret_in_later_answers(exercised: Exercised) -> None:
    """Lists, details, admin change pages, the OpenAPI document and the metrics show no secret."""
    found = {name: leaks(text, exercised.secrets) for name, text in later_answers(exercised).items()}
    assert {name: secrets for name, secrets in found.items() if secrets} == {}


def test_leak_check_finds_a_window_of_a_secret() -> None:
    """The check flags a secret's middle, and not its public 8-character prefix."""
    secret = "abcdefgh" + "x" * 30 + "ijklmnopqrst"
    assert leaks(f"... {secret[20:32]} ...", {"s": secret}) == ["s"]
    assert leaks(f"prefix {secret[:8]}…", {"s": secret}) == []
