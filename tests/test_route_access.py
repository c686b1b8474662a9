"""Every route, HTTP and websocket, against a real server as an anonymous client: refused unless it is in
the public allowlist below with its reason. The routes are enumerated from Django's URL resolver (admin
included), the API's OpenAPI document (each method) and the websocket routing, so a route added later is
probed too: it fails here until it refuses anonymous clients or is allowlisted with a reason."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from app.auth.services import create_token
from app.broker.models import Message, Topic
from consumers.routing import websocket_urlpatterns
from tests.browser import Answer, Browser
from tests.outbox import event
from tests.protocol import auth, b64, close_code_within, connect, make_topic, make_user, recv_json, send_json, unique
from tests.servers import ServerProcess, start_server
from tests.work import pending, worker

API = "/api/v1/"
ADMIN = "/admin/"
ADMIN_LOGIN = "/admin/login/"
REFUSED = (401, 403)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# 400: a handshake the route cannot serve at all (a Pulsar consumer naming no subscription).
WS_REFUSED_STATUSES = (400, 401, 403)
# Close codes of a socket refused after its handshake: 4401 / 4403 (not authenticated / not allowed).
WS_REFUSED_CLOSES = (4401, 4403)
METRICS_TOKEN = "route-access-metrics-token"

# Routes anyone may reach, by Django route (or OpenAPI path) and method, each with why.
PUBLIC_HTTP: dict[tuple[str, str], str] = {
    ("GET", ""): "the public status page: lists only the topics anonymous clients may see",
    ("GET", "healthz"): "liveness probe for balancers: says only that the process serves HTTP",
    ("GET", "readyz"): "readiness probe for balancers: names unreachable dependencies, no data",
    ("GET", "favicon.ico"): "a static icon",
    ("GET", "admin/login/"): "the admin login form (throttled: LOGIN_FAILURES_MAX)",
    ("GET", "admin/logout/"): "redirects to the admin index (so to the login); logging out takes a POST",
    ("GET", "api/v1/"): "ninja's API root, always 404: it exists so operations' paths can be reversed",
    ("GET", "api/v1/docs"): "the API's interactive documentation (a page; calls made from it are checked)",
    ("GET", "api/v1/openapi.json"): "the OpenAPI document: the API's shape, no data",
    ("GET", "api/v1/asyncapi.json"): "the AsyncAPI document of the websocket protocol: its shape, no data",
    ("GET", "api/v1/asyncapi"): "the AsyncAPI document rendered as a page",
    ("GET", "/api/v1/topics"): "lists only the topics the caller may see (anonymous: anonymous-readable ones)",
    ("PUT", "/api/v1/_bulk/"): "runs each operation as the caller, under its own check (see the bulk test below)",
}

# Websocket routes (by their pattern) anyone may open, with why; what they then show is checked.
PUBLIC_WS: dict[str, str] = {
    r"^ws/status/?$": "the status page's live feed: only the topics anonymous clients may see",
    r"": "the catch-all: answers every unknown path with a 404 / close 4404 and nothing else",
}


@dataclass
class Objects:
    """Real objects a path parameter names: all private to their owner."""

    owner: Any
    slug: str
    topic_pk: int
    message_id: str
    token_pk: int
    token_key: str
    event_pk: int
    work_request_pk: int
    worker_pk: int


@pytest.fixture(scope="module")
def server(_migrated: None) -> Iterator[ServerProcess]:
    """A server whose /metrics needs its token (else loopback clients, as this test is, may scrape)."""
    proc = start_server(os.environ["DATABASE_URL"], METRICS_TOKEN=METRICS_TOKEN)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def objects(_migrated: None, django_db_blocker: Any) -> Objects:
    with django_db_blocker.unblock():
        owner = make_user()
        slug = make_topic(public=False, anonymous=False, consumers=(owner,), producers=(owner,))
        topic = Topic.objects.get(slug=slug)
        message = Message.objects.create(topic=topic, sequence=1, producer_principal=f"user:{owner.pk}",
                                         frame="{}", publish_time=timezone.now())
        token, key = create_token(owner)
        return Objects(owner=owner, slug=slug, topic_pk=topic.pk, message_id=str(message.message_id),
                       token_pk=token.pk, token_key=key, event_pk=event(destination=slug).pk,
                       work_request_pk=pending(created_by=owner).pk, worker_pk=worker().pk)


def http_routes() -> Iterator[tuple[str, URLPattern]]:
    """Every Django route (its pattern text, prefixes joined) with its pattern."""
    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern

    return walk(get_resolver().url_patterns, "")


PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>|\{(\w+)\}|\(\?P<(\w+)>[^)]*\)")


def concrete(route: str, objects: Objects) -> str:
    """``route`` with its parameters filled: a private object's id where the route names one, else a dummy
    (the admin checks its session before it looks anything up)."""
    values = {
        "slug": objects.slug, "username": objects.owner.username, "message_id": objects.message_id,
        "object_id": "1", "object_pk": str(objects.topic_pk), "id": str(objects.owner.pk),
        "content_type_id": "1", "user_id": str(objects.owner.pk), "group_id": "1",
        "app_label": "broker", "url": "no-such-page/",
    }
    pks = {"tokens": objects.token_pk, "outbox/events": objects.event_pk,
           "work-requests": objects.work_request_pk, "workers": objects.worker_pk}

    def fill(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2) or found.group(3)
        if name == "pk":
            owner = next((kind for kind in pks if f"/{kind}/" in route), None)
            assert owner is not None, f"{route}: which object does its pk name? add it to this test"
            return str(pks[owner])
        assert name in values, f"{route}: no value for path parameter {name!r}: add one to this test"
        return values[name]

    path = PARAMETER.sub(fill, route).removeprefix("^").removesuffix("$")
    return path if path.startswith("/") else "/" + path


def api_operations(server: ServerProcess) -> dict[tuple[str, str], Any]:
    """(method, OpenAPI path) of every operation the server documents, with its request body's example
    (None without a body): a write is sent a valid body, so it reaches its caller's check rather than
    stopping at validation (422)."""
    paths = Browser(server.http).request(f"{API}openapi.json").json()["paths"]
    return {(method.upper(), path): request_example(operation)
            for path, operations in paths.items() for method, operation in operations.items()}


def request_example(operation: dict[str, Any]) -> Any:
    if "requestBody" not in operation:
        return None
    content = operation["requestBody"]["content"]["application/json"]
    if "example" in content:
        return content["example"]
    return next(iter(content["examples"].values()))["value"]


@dataclass
class Probe:
    method: str
    route: str  # as enumerated: a Django route, or an OpenAPI path
    path: str  # with its parameters filled
    body: Any = None  # the OpenAPI request example (None: no body)

    def send(self, browser: Browser, path: str | None = None) -> Answer:
        path = path or self.path
        if self.method == "GET":
            return browser.request(path)
        if self.body is None:
            return browser.request(path, self.method)
        return browser.send_json(path, self.method, self.body)


def probes(server: ServerProcess, objects: Objects) -> list[Probe]:
    """Every HTTP route: the API's operations from its OpenAPI document (each method, with its request
    example), every other route by each method (Django's CSRF check refuses a cookie-less write first)."""
    operations = api_operations(server)
    documented = {re.sub(r"\{\w+\}", "<>", path) for _, path in operations}
    found = [Probe(method, path, concrete(path, objects), body) for (method, path), body in operations.items()]
    for route, _pattern in http_routes():
        if "/" + re.sub(r"<(?:\w+:)?\w+>", "<>", route) not in documented:
            found += [Probe(method, route, concrete(route, objects)) for method in METHODS]
    return found


def refused(answer: Answer, path: str) -> bool:
    """Whether an anonymous request was turned away: 401/403, 405 (no such method), or a redirect to the
    admin login."""
    if answer.status in (*REFUSED, 405) or bulk_refused(answer):
        return True
    return path.startswith(ADMIN) and answer.status == 302 and answer.headers["location"].startswith(
        f"{ADMIN_LOGIN}?next=")


def bulk_refused(answer: Answer) -> bool:
    """Whether a bulk's answer (a list of results, app/api/bulk.py) refused every operation it held: a
    bulk runs each as its caller."""
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return False
    results = answer.json()
    return isinstance(results, list) and bool(results) and all(
        isinstance(result, dict) and result.get("status") in REFUSED for result in results)


def hidden(probe: Probe, answer: Answer, objects: Objects, browser: Browser) -> bool:
    """Whether a 404 hides the private topic: the route answers a missing topic exactly alike."""
    if answer.status != 404 or objects.slug not in probe.path:
        return False
    missing = unique("missing")
    other = probe.send(browser, probe.path.replace(objects.slug, missing))
    return other.status == 404 and other.body.replace(missing.encode(), objects.slug.encode()) == answer.body


def test_every_http_route_refuses_anonymous_clients(server: ServerProcess, objects: Objects) -> None:
    """Each HTTP route (each API method) refuses an anonymous client unless it is allowlisted as public: a
    private topic's routes may answer 404, as they answer for a missing topic."""
    anonymous = Browser(server.http)
    open_routes = []
    for probe in probes(server, objects):
        if (probe.method, probe.route) in PUBLIC_HTTP:
            continue
        answer = probe.send(anonymous)
        if not (refused(answer, probe.path) or hidden(probe, answer, objects, anonymous)):
            open_routes.append((probe.method, probe.route, probe.path, answer.status, answer.body[:200]))
    assert not open_routes, "open to anonymous clients and not allowlisted:\n" + "\n".join(map(str, open_routes))


def test_anonymous_bulk_is_refused_each_private_operation(server: ServerProcess, objects: Objects) -> None:
    """A bulk runs its operations as its anonymous caller: each one on a private object is refused."""
    paths = [f"topics/{objects.slug}", f"topics/{objects.slug}/messages", "outbox/events", "tokens",
             f"work-requests/{objects.work_request_pk}", "workers", f"workers/{objects.worker_pk}"]
    answer = Browser(server.http).send_json(f"{API}_bulk/", "PUT", [{"method": "GET", "path": p} for p in paths])
    assert answer.status == 200, answer.body
    assert [result["status"] for result in answer.json()] == [404, 404, 401, 401, 401, 401, 401]


def test_private_objects_are_real(server: ServerProcess, objects: Objects) -> None:
    """The private topic and message the probes name exist: their owner's token reads them."""
    owner = Browser(server.http, headers=auth(objects.token_key))
    assert owner.request(f"{API}topics/{objects.slug}").status == 200
    assert owner.request(f"{API}topics/{objects.slug}/messages/{objects.message_id}").status == 200


def test_public_routes_show_no_private_topic(server: ServerProcess, objects: Objects) -> None:
    """What the allowlisted GET routes answer an anonymous client never names the private topic."""
    anonymous = Browser(server.http)
    for (method, route), _reason in PUBLIC_HTTP.items():
        if method == "GET":
            answer = anonymous.request(concrete(route, objects))
            assert answer.status < 500, (route, answer.status)
            assert objects.slug.encode() not in answer.body, route


def test_allowlist_names_existing_routes(server: ServerProcess, objects: Objects) -> None:
    """Every allowlist entry is a route that exists, so a stale entry cannot hide a new route."""
    enumerated = {(probe.method, probe.route) for probe in probes(server, objects)}
    assert set(PUBLIC_HTTP) <= enumerated, set(PUBLIC_HTTP) - enumerated
    patterns = {pattern.pattern.regex.pattern for pattern in websocket_urlpatterns}
    assert set(PUBLIC_WS) <= patterns, set(PUBLIC_WS) - patterns


# A concrete URL (path parameters filled in ``ws_url``) per websocket route, and the frame an accepted
# socket is sent (None: only the handshake is judged).
PRODUCE = {"payload": b64({"n": 1}), "properties": {}, "context": 1}
WS_SAMPLES: dict[str, tuple[str, dict[str, Any] | None]] = {
    r"^ws/status/?$": ("ws/status/?topics={slug}", None),
    r"^ws/work-requests/?$": ("ws/work-requests/", None),
    r"^ws/status-ping/?$": ("ws/status-ping/", {**PRODUCE, "properties": {"source_topic": "{slug}"}}),
    r"^ws/v2/producer/[^/]+/[^/]+/[^/]+/status-ping/?$": (
        "ws/v2/producer/persistent/public/default/status-ping",
        {**PRODUCE, "properties": {"source_topic": "{slug}"}}),
    r"^ws/workers/?$": ("ws/workers/", None),
    "producer": ("ws/v2/producer/persistent/public/default/{slug}", PRODUCE),
    "consumer-subscription": ("ws/v2/consumer/persistent/public/default/{slug}/sub", None),
    "consumer": ("ws/v2/consumer/persistent/public/default/{slug}", None),
    "reader": ("ws/v2/reader/persistent/public/default/{slug}", None),
    "dasf-producer": ("ws/{slug}", PRODUCE),
    "dasf-consumer": ("ws/{slug}/sub", None),
    r"": ("no-such/route", None),
}


def ws_sample(pattern: str) -> tuple[str, dict[str, Any] | None]:
    """The sample of route ``pattern``: by its exact text, else by its shape (topic routes embed the
    topic pattern, too long to spell here)."""
    if pattern in WS_SAMPLES:
        return WS_SAMPLES[pattern]
    shapes = [("ws/v2/producer/", "producer"), ("ws/v2/reader/", "reader")]
    for prefix, name in shapes:
        if pattern.startswith("^" + prefix) and "(?P<topic>" in pattern:
            return WS_SAMPLES[name]
    if pattern.startswith("^ws/v2/consumer/") and "(?P<topic>" in pattern:
        return WS_SAMPLES["consumer-subscription" if "(?P<subscription>" in pattern else "consumer"]
    if pattern.startswith("^ws/(?P<topic>"):
        return WS_SAMPLES["dasf-consumer" if "(?P<subscription>" in pattern else "dasf-producer"]
    raise AssertionError(f"websocket route {pattern!r} has no sample URL: add one to WS_SAMPLES")


def ws_refused_how(error: Exception) -> str | None:
    """Why a handshake failed, when it was a refusal (an HTTP answer with a refusing status)."""
    if isinstance(error, websockets.InvalidStatus) and error.response.status_code in WS_REFUSED_STATUSES:
        return f"HTTP {error.response.status_code}"
    return None


async def ws_outcome(server: ServerProcess, url: str, frame: dict[str, Any] | None) -> str:
    """How the server treated an anonymous socket at ``url``: "refused: ..." or "open: ..."."""
    try:
        ws = await connect(f"ws://127.0.0.1:{server.port}/{url}")
    except websockets.InvalidStatus as error:
        how = ws_refused_how(error)
        return f"refused: {how}" if how else f"open: handshake answered {error.response.status_code}"
    if frame is not None:
        await send_json(ws, frame)
        try:
            answer = await recv_json(ws, 5)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            return f"refused: closed {code}" if code in WS_REFUSED_CLOSES else f"open: closed {code}"
        if answer.get("result") != "ok" and answer.get("errorMsg"):
            return f"refused: error frame {answer.get('errorMsg')!r}"
        return f"open: answered {answer}"
    code = await close_code_within(ws, 1.0)
    return f"refused: closed {code}" if code in WS_REFUSED_CLOSES else f"open: close code {code}"


def ws_url(pattern: str, objects: Objects) -> tuple[str, dict[str, Any] | None]:
    url, frame = ws_sample(pattern)
    filled = json.loads(json.dumps(frame).replace("{slug}", objects.slug)) if frame else None
    return url.replace("{slug}", objects.slug), filled


async def test_every_websocket_route_refuses_anonymous_clients(server: ServerProcess, objects: Objects) -> None:
    """Each websocket route refuses an anonymous client on a private topic (handshake refused, an error
    frame, or a 4401/4403 close) unless it is allowlisted as public."""
    outcomes = {}
    for route in websocket_urlpatterns:
        pattern = route.pattern.regex.pattern
        url, frame = ws_url(pattern, objects)
        assert route.pattern.regex.match(url.partition("?")[0]), (pattern, url)
        outcomes[pattern] = await ws_outcome(server, url, frame)
    open_routes = {p: o for p, o in outcomes.items() if not o.startswith("refused") and p not in PUBLIC_WS}
    assert not open_routes, f"open to anonymous clients and not allowlisted: {open_routes}"


async def test_status_feed_shows_anonymous_no_private_topic(server: ServerProcess, objects: Objects) -> None:
    """The public status feed, asked for the private topic by name, sends only ``synced``."""
    ws = await connect(f"{server.ws}status/?topics={objects.slug}")
    assert (await recv_json(ws))["type"] == "synced"
    assert await close_code_within(ws, 0.5) is None


def session_browser(server: ServerProcess, user: Any) -> Browser:
    """A browser holding a logged-in session of ``user`` (made in the shared database)."""
    client = Client()
    client.force_login(user)
    return Browser(server.http, headers={"Cookie": f"sessionid={client.cookies['sessionid'].value}"})


def test_non_staff_session_cannot_reach_admin(server: ServerProcess, objects: Objects) -> None:
    """A logged-in user who is not staff is sent to the admin login from every admin page."""
    browser = session_browser(server, make_user())
    for route, _pattern in http_routes():
        if route.startswith("admin/") and ("GET", route) not in PUBLIC_HTTP:
            path = concrete(route, objects)
            answer = browser.request(path)
            assert refused(answer, path), (route, answer.status)


def test_non_staff_session_cannot_use_admin_data_over_the_api(server: ServerProcess, objects: Objects) -> None:
    """A non-staff session reads neither the private topic nor the outbox over the API."""
    browser = session_browser(server, make_user())
    assert browser.request(f"{API}topics/{objects.slug}").status == 404
    assert browser.request(f"{API}outbox/events").status == 403


def test_metrics_need_their_token(server: ServerProcess) -> None:
    """With METRICS_TOKEN set, /metrics answers only its bearer (the allowlist above does not name it)."""
    anonymous = Browser(server.http)
    assert anonymous.request("/metrics").status in REFUSED
    answer = anonymous.request("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status == 200


def test_staff_session_admin_write_without_csrf_is_refused(server: ServerProcess, objects: Objects) -> None:
    """A superuser's session posting an admin form without its CSRF token is refused and adds nothing
    (the API's session writes: tests/test_api_csrf.py)."""
    browser = session_browser(server, make_user(is_staff=True, is_superuser=True))
    slug = unique("csrf")
    answer = browser.request("/admin/broker/topic/add/", "POST", f"slug={slug}".encode(),
                             {"Content-Type": "application/x-www-form-urlencoded", "Origin": server.http})
    assert answer.status == 403 and b"CSRF verification failed" in answer.body
    assert not Topic.objects.filter(slug=slug).exists()
