"""Bulk requests (/api/v1/_bulk/) on a real server: POST all-or-nothing in one transaction (checked by
the database's state), PUT in order, references to earlier results, the caller's rights, CSRF, and
the refusals (nested bulks, too many operations, malformed bodies, bad references) and the limits on
what references may add to an operation and on the results a bulk keeps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission

from app.api.references import MAX_DEPTH, BadReference, Budget, Results, render, render_text
from app.auth.models import Token
from app.broker.models import Announcement, Topic
from tests.api_client import call
from tests.browser import Browser
from tests.protocol import eventually, make_token, make_topic, make_user, set_password, unique
from tests.servers import ServerProcess, start_server

BULK = "/_bulk/"
# A result of about 12 KB (its path echoes the query), whoever calls: the first operation of the
# amplification tests, each use of it in a later one adding 12 KB.
BIG_QUERY = "prefix=" + "x" * 12_000
BIG_RESULT = {"method": "get", "path": "topics", "query": BIG_QUERY}
# BULK_MAX_RESULT_BYTES of the capped server: two BIG_RESULTs fit, the third passes it.
RESULT_CAP = 30_000


def key_with(*codenames: str) -> tuple[Any, str]:
    """A user granted these model permissions (``app.codename``) and nothing else, and a token of theirs."""
    user = make_user()
    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user, make_token(user)


def creator_key() -> str:
    return key_with("broker.add_topic", "switchyard_auth.add_token")[1]


def create(name: str, **more: Any) -> dict[str, Any]:
    return {"method": "post", "path": "topics", "data": {"name": name}, **more}


def statuses(results: list[dict[str, Any]]) -> list[int]:
    return [result["status"] for result in results]


# POST: one transaction
def test_post_creates_topic_and_token_with_references(server: ServerProcess) -> None:
    """A POST bulk creates a topic and a token naming it, and reads both back through references."""
    key, name = creator_key(), unique("bulk")
    status, results = call(server, BULK, "POST", key, [
        create(name, let="topic"),
        {"method": "post", "path": "tokens", "data": {"comment": "for <<topic[data][name]>>"}, "let": "token"},
        {"method": "get", "path": ["topics", "<<topic[data][name]>>"]},
        {"method": "get", "path": "tokens", "query": "enabled=true&limit=<<2[status]>>"},
    ])
    assert status == 200, results
    assert statuses(results) == [201, 201, 200, 200]
    assert results[2]["data"]["name"] == name
    assert results[3]["path"] == "/api/v1/tokens?enabled=true&limit=200"
    assert Topic.objects.filter(slug=name).exists()
    assert Token.objects.get(pk=results[1]["data"]["id"]).comment == f"for {name}"


def test_post_rolls_back_everything_at_the_first_failure(server: ServerProcess) -> None:
    """The third operation fails: 502 with three results, and the rows of the first two are not in the database."""
    key, name, comment = creator_key(), unique("rollback"), unique("comment")
    status, results = call(server, BULK, "POST", key, [
        create(name),
        {"method": "post", "path": "tokens", "data": {"comment": comment}},
        create("not a valid name!"),
        create(unique("never")),
    ])
    assert status == 502
    assert statuses(results) == [201, 201, 422]
    assert not Topic.objects.filter(slug=name).exists()
    assert not Token.objects.filter(comment=comment).exists()
    # Its announcement was written in the same transaction: no server hears of the topic.
    assert not Announcement.objects.filter(slug=name).exists()


def test_post_rolls_back_a_failed_change_of_an_existing_topic(server: ServerProcess) -> None:
    """A change made by an earlier operation of a failed POST bulk is undone."""
    _, key = key_with("broker.change_topic")
    slug = make_topic(public=False, dasf=True)
    Topic.objects.filter(slug=slug).update(is_public=True)
    status, results = call(server, BULK, "POST", key, [
        {"method": "patch", "path": ["topics", slug], "data": {"supports_dasf": False}},
        {"method": "get", "path": ["topics", unique("missing")]},
    ])
    assert (status, statuses(results)) == (502, [200, 404])
    assert Topic.objects.get(slug=slug).supports_dasf


# PUT: in order, no transaction
def test_put_runs_every_operation_and_keeps_the_successes(server: ServerProcess) -> None:
    """A PUT bulk answers 200 with each status; the operations around a failed one take effect."""
    key, first, last = creator_key(), unique("put"), unique("put")
    status, results = call(server, BULK, "PUT", key, [create(first), create("bad name"), create(last)])
    assert (status, statuses(results)) == (200, [201, 422, 201])
    assert results[1]["data"]["detail"]
    assert Topic.objects.filter(slug__in=[first, last]).count() == 2


# References
@pytest.mark.parametrize("root", ["0", "made"])
def test_references_in_path_query_and_data(server: ServerProcess, root: str) -> None:
    """References by index and by let name resolve in path, query and data."""
    _, key = key_with("broker.add_topic", "broker.change_topic")
    name = unique("ref")
    status, results = call(server, BULK, "POST", key, [
        create(name, let="made"),
        {"method": "patch", "path": f"topics/<<{root}[data][name]>>",
         "data": {"public": f"<<{root}[data][supports_dasf]>>"}},
        {"method": "get", "path": "topics", "query": f"prefix=<<{root}[data][name]>>"},
    ])
    assert status == 200, results
    assert results[1]["data"]["public"] is True
    assert [item["name"] for item in results[2]["data"]["items"]] == [name]
    assert Topic.objects.get(slug=name).is_public


def test_reference_inside_a_query_cannot_add_parameters(server: ServerProcess) -> None:
    """A value put inside a query string is escaped: '&' in it does not start another parameter."""
    status, results = call(server, BULK, "PUT", creator_key(), [
        {"method": "post", "path": "tokens", "data": {"comment": "x&limit=1"}},
        {"method": "get", "path": "topics", "query": "prefix=<<0[data][comment]>>"},
    ])
    assert status == 200
    assert results[1]["path"] == "/api/v1/topics?prefix=x%26limit%3D1"
    assert results[1]["status"] == 200


def test_query_that_is_one_reference_is_escaped_too(server: ServerProcess) -> None:
    """A query string that is a single reference is escaped like one inside a longer string."""
    status, results = call(server, BULK, "PUT", creator_key(), [
        {"method": "post", "path": "tokens", "data": {"comment": "limit=1"}},
        {"method": "get", "path": "topics", "query": "<<0[data][comment]>>"},
    ])
    assert status == 200
    assert results[1]["path"] == "/api/v1/topics?limit%3D1"


@pytest.mark.parametrize(("reference", "reason"), [
    ("<<7[data][name]>>", "operation 7 has not run"),
    ("<<0[data][nope]>>", "holds no [nope]"),
    ("<<later[data][name]>>", "no earlier operation is named 'later'"),
])
def test_bad_reference_fails_its_operation_only_under_put(server: ServerProcess, reference: str, reason: str) -> None:
    """Under PUT a bad reference (forward, missing field, unknown name) is that operation's 422; the next runs."""
    key, after = creator_key(), unique("after")
    status, results = call(server, BULK, "PUT", key, [
        create(unique("ref")),
        {"method": "get", "path": ["topics", reference]},
        create(after, let="later"),
    ])
    assert (status, statuses(results)) == (200, [201, 422, 201])
    assert reason in results[1]["info"]
    assert results[1]["data"] == {"detail": results[1]["info"]}


def test_bad_reference_fails_a_post_bulk(server: ServerProcess) -> None:
    """Under POST a bad reference fails the bulk: 502, and the first operation's topic is rolled back."""
    key, name = creator_key(), unique("ref")
    status, results = call(server, BULK, "POST", key, [
        create(name), {"method": "get", "path": ["topics", "<<1[data][name]>>"]},
    ])
    assert (status, statuses(results)) == (502, [201, 422])
    assert not Topic.objects.filter(slug=name).exists()


def test_index_of_other_digits_is_a_bad_reference(server: ServerProcess) -> None:
    """A list index written with non-ASCII digits ('²') is a 422 like any missing field, not a 500."""
    status, results = call(server, BULK, "PUT", creator_key(), [
        {"method": "get", "path": "topics", "query": "limit=1"},
        {"method": "get", "path": "topics", "data": "<<0[data][items][\u00b2]>>"},
    ])
    assert (status, statuses(results)) == (200, [200, 422])
    assert "holds no [\u00b2]" in results[1]["info"]


def test_deeply_nested_data_is_refused(server: ServerProcess) -> None:
    """Data nested deeper than MAX_DEPTH is that operation's 422 (not a recursion error); up to it, it runs."""
    def token_body(levels: int) -> dict[str, Any]:
        extra: list[Any] = []
        for _ in range(levels - 2):
            extra = [extra]
        return {"comment": "deep", "extra": extra}  # ``levels`` containers, the body the first

    status, results = call(server, BULK, "PUT", creator_key(), [
        {"method": "post", "path": "tokens", "data": token_body(MAX_DEPTH)},
        {"method": "post", "path": "tokens", "data": token_body(500)},
    ])
    assert (status, statuses(results)) == (200, [201, 422]), results
    assert results[1]["info"] == f"data: nested deeper than {MAX_DEPTH} levels"


def budget(results: Results, limit: int = 10_000, in_json: bool = True) -> Budget:
    return Budget(results, "data", limit, "SOME_LIMIT", in_json=in_json)


def test_whole_reference_keeps_the_value_type() -> None:
    """A string that is one reference becomes the value itself; inside a longer string, its JSON text."""
    results = Results()
    results.add({"status": 201, "data": {"id": 7, "tags": ["a"], "ok": True}}, "made")
    rendered = render({"id": "<<0[data][id]>>", "tags": "<<made[data][tags]>>", "ok": ["<<0[data][ok]>>"]},
                      budget(results))
    assert rendered == {"id": 7, "tags": ["a"], "ok": [True]}
    assert render("id <<0[data][id]>> of <<made[data][tags][0]>>: <<0[data][tags]>>",
                  budget(results)) == 'id 7 of a: ["a"]'


def test_reference_to_the_running_operation_is_refused() -> None:
    """Operation N may refer only to operations before it."""
    results = Results()
    results.add({"data": {}}, None)
    with pytest.raises(BadReference, match="operation 1 has not run"):
        render("<<1[data]>>", budget(results))


@pytest.mark.parametrize("data", [["<<0[data]>>"] * 2000, ["x <<0[data]>>"] * 2000, "<<0[data]>>" * 2000])
def test_budget_stops_rendering_once_passed(data: Any) -> None:
    """2,000 uses of a 1 KB value against 10 KB: refused once the count passes the limit, not after all of them."""
    results = Results()
    results.add({"data": "v" * 1000}, None)
    spent = budget(results)
    with pytest.raises(BadReference, match=r"data: its references add more than 10000 bytes \(SOME_LIMIT\)"):
        render(data, spent)
    assert spent.limit < spent.used <= spent.limit + 1002


def test_budget_counts_what_each_use_puts_in() -> None:
    """A value counts as written: JSON-escaped in the body, escaped by the query's quote in a head."""
    results = Results()
    results.add({"data": {"text": "a\"b", "list": [1, 2]}}, None)
    body = budget(results)
    render({"whole": "<<0[data][list]>>", "inside": "<<0[data][text]>>!"}, body)
    assert body.used == len("[1, 2]") + len('a\\"b')
    head = budget(results, in_json=False)
    assert render_text("q=<<0[data][text]>>", head, lambda text: text.replace('"', "%22")) == "q=a%22b"
    assert head.used == len("a%22b")


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


# Rights and identity
def test_unprivileged_caller_cannot_do_in_a_bulk_what_they_cannot_do_directly(server: ServerProcess) -> None:
    """A caller without broker.add_topic gets 403 for a create inside a bulk too, and nothing is created."""
    _, key = key_with()
    name = unique("norights")
    assert call(server, "/topics", "POST", key, {"name": name})[0] == 403
    status, results = call(server, BULK, "PUT", key, [create(name)])
    assert (status, statuses(results)) == (200, [403])
    assert not Topic.objects.filter(slug=name).exists()


def test_operation_cannot_name_another_caller(server: ServerProcess) -> None:
    """An operation's own Authorization header (a superuser's key) is refused: it runs as the bulk's caller."""
    _, key = key_with()
    other = make_token(make_user(is_superuser=True, is_staff=True))
    name = unique("escalate")
    status, results = call(server, BULK, "PUT", key, [create(name, headers={"Authorization": f"Token {other}"})])
    assert (status, statuses(results)) == (200, [422])
    assert "Authorization is not allowed" in results[0]["info"]
    assert not Topic.objects.filter(slug=name).exists()


def test_header_that_http_cannot_carry_is_refused(server: ServerProcess) -> None:
    """A header value outside latin-1 is that operation's 422, not a server error."""
    status, results = call(server, BULK, "PUT", creator_key(), [
        {"method": "get", "path": "topics", "headers": {"X-Note": "\u2603"}},
        {"method": "get", "path": "topics", "headers": {"X-Note": "plain"}},
    ])
    assert (status, statuses(results)) == (200, [422, 200])


def test_anonymous_bulk_runs_as_anonymous(server: ServerProcess) -> None:
    """Without credentials the operations are anonymous: a create is 401."""
    name = unique("anon")
    status, results = call(server, BULK, "PUT", None, [create(name)])
    assert (status, statuses(results)) == (200, [401])
    assert not Topic.objects.filter(slug=name).exists()


def test_token_disabled_by_an_earlier_operation_stops_the_later_ones(server: ServerProcess) -> None:
    """Credentials are checked for each operation: once the bulk's token is disabled, the next operation is 401."""
    user, key = key_with()
    token = Token.objects.get(user=user)
    status, results = call(server, BULK, "PUT", key, [
        {"method": "post", "path": ["tokens", token.pk, "disable"]},
        {"method": "get", "path": "tokens"},
    ])
    assert (status, statuses(results)) == (200, [200, 401])


@pytest.fixture
def admin_browser(server: ServerProcess) -> Browser:
    user = make_user(is_superuser=True, is_staff=True)
    browser = Browser(server.http)
    assert browser.admin_login(user.username, set_password(user)).status == 302
    return browser


def test_session_bulk_without_csrf_token_is_refused(admin_browser: Browser) -> None:
    """A session-authenticated bulk is a write: without the CSRF token it is 403 and runs nothing."""
    name = unique("csrf")
    answer = admin_browser.send_json(f"/api/v1{BULK}", value=[create(name)], headers={"Origin": admin_browser.base})
    assert answer.status == 403
    assert answer.json()["detail"].startswith("CSRF check failed")
    assert not Topic.objects.filter(slug=name).exists()


def test_session_bulk_with_csrf_token_runs_as_the_session_user(admin_browser: Browser) -> None:
    """With the CSRF token checked once, the operations run as the session's user (no token of their own)."""
    name = unique("csrf")
    answer = admin_browser.send_json(f"/api/v1{BULK}", value=[create(name)], headers=admin_browser.csrf_headers())
    assert answer.status == 200, answer.body
    assert statuses(answer.json()) == [201]
    assert Topic.objects.filter(slug=name).exists()


# Refusals
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_nested_bulk_is_refused(server: ServerProcess, method: str) -> None:
    """An operation that is itself a bulk is a 422 in its result (a POST bulk then fails as a whole)."""
    status, results = call(server, BULK, method, creator_key(), [{"method": "post", "path": "_bulk", "data": []}])
    assert status == (502 if method == "POST" else 200)
    assert statuses(results) == [422]
    assert results[0]["info"] == "a bulk cannot hold a bulk"


def test_ping_is_refused_in_a_transaction(server: ServerProcess) -> None:
    """The ping probes sockets at once, which no rollback undoes: a POST bulk refuses it."""
    slug = make_topic()
    status, results = call(server, BULK, "POST", creator_key(), [{"method": "post", "path": ["topics", slug, "ping"]}])
    assert (status, statuses(results)) == (502, [422])


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
