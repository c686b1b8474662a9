"""Bulk requests (/api/v1/_bulk/) on a real server: POST all-or-nothing in one transaction (checked by
the database's state), PUT in order, references to earlier results, the caller's rights, CSRF, and
the refusals (nested bulks, too many operations, malformed bodies, bad references)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission

from app.api.references import MAX_DEPTH, BadReference, Results, render
from app.auth.models import Token
from app.broker.models import Announcement, Topic
from tests.api_client import call
from tests.browser import Browser
from tests.protocol import make_token, make_topic, make_user, set_password, unique
from tests.servers import ServerProcess

BULK = "/_bulk/"


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


def test_whole_reference_keeps_the_value_type() -> None:
    """A string that is one reference becomes the value itself; inside a longer string, its JSON text."""
    results = Results()
    results.add({"status": 201, "data": {"id": 7, "tags": ["a"], "ok": True}}, "made")
    assert render({"id": "<<0[data][id]>>", "tags": "<<made[data][tags]>>", "ok": ["<<0[data][ok]>>"]}, results) == {
        "id": 7, "tags": ["a"], "ok": [True]}
    assert render("id <<0[data][id]>> of <<made[data][tags][0]>>: <<0[data][tags]>>", results) == 'id 7 of a: ["a"]'


def test_reference_to_the_running_operation_is_refused() -> None:
    """Operation N may refer only to operations before it."""
    results = Results()
    results.add({"data": {}}, None)
    with pytest.raises(BadReference, match="operation 1 has not run"):
        render("<<1[data]>>", results)


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
