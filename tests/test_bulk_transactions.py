"""Bulk requests (/api/v1/_bulk/) on a real server: a POST bulk is all-or-nothing in one transaction (checked
by the database's state), a PUT bulk runs every operation in order and keeps the successes, and a transaction
refuses what no rollback undoes (the ping)."""

from __future__ import annotations

from app.auth.models import Token
from app.broker.models import Announcement, Topic
from tests.api_client import BULK, call, create, creator_key, statuses
from tests.protocol import key_with, make_topic, unique
from tests.servers import ServerProcess


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


def test_ping_is_refused_in_a_transaction(server: ServerProcess) -> None:
    """The ping probes sockets at once, which no rollback undoes: a POST bulk refuses it."""
    slug = make_topic()
    status, results = call(server, BULK, "POST", creator_key(), [{"method": "post", "path": ["topics", slug, "ping"]}])
    assert (status, statuses(results)) == (502, [422])


# PUT: in order, no transaction
def test_put_runs_every_operation_and_keeps_the_successes(server: ServerProcess) -> None:
    """A PUT bulk answers 200 with each status; the operations around a failed one take effect."""
    key, first, last = creator_key(), unique("put"), unique("put")
    status, results = call(server, BULK, "PUT", key, [create(first), create("bad name"), create(last)])
    assert (status, statuses(results)) == (200, [201, 422, 201])
    assert results[1]["data"]["detail"]
    assert Topic.objects.filter(slug__in=[first, last]).count() == 2
