"""References to earlier results in bulk operations (``<<0[data][name]>>``, ``<<made[data][name]>>``): resolved
in path, query and data on a real server, escaped inside a query, a bad one refused (under PUT its operation's
422, under POST the whole bulk), data nested too deep refused; and the rendering and its byte budget
(app/api/references.py) as plain functions."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.references import MAX_DEPTH, BadReference, Budget, Results, render, render_text
from app.broker.models import Topic
from tests.api_client import BULK, call, create, creator_key, statuses
from tests.protocol import key_with, unique
from tests.servers import ServerProcess


# On a real server
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


# Rendering (no server)
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
