"""CQRS end to end over Switchyard's own topics: a master (tests/apps/cqrs_master, written here) -> the
outbox -> a server whose relay publishes to a topic (OUTBOX_TARGET=topic) -> that server's Pulsar
websocket API -> ``manage.py cqrs_consume`` with CQRS_TOPIC -> a replica (tests/apps/cqrs_replica), all
real processes (relays/cqrs_topic_consumer.py)."""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from app.broker.models import Message, Topic
from app.broker.permissions import grant
from app.cqrs.events import CONTENT_TYPE, emit_payload
from app.cqrs.payload import SignalType, TransportPayload
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from app.pulsar.models import Subscription
from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.cqrs_replication import churn, master_state, replica_state
from tests.outbox import clear_outbox
from tests.protocol import eventually, make_token, make_topic, make_user, unique
from tests.servers import ConsumerProcess, ServerProcess, start_server

UPDATED = "2025-01-02T03:04:05+00:00"
# The consumers' reconnection back-off base: half the default, so a refused or restarted consumer's
# next attempt comes sooner (its first back-off is still at least this long).
RECONNECT_BASE_S = 0.5


@dataclass
class Master:
    """A server relaying the outbox to its topic ``topic``, which ``user`` may consume."""

    server: ServerProcess
    topic: str
    user: Any

    def consumer_env(self, subscription: str, token: str) -> dict[str, str]:
        return {"CQRS_TOPIC": self.topic, "CQRS_TOPIC_URL": f"ws://127.0.0.1:{self.server.port}",
                "CQRS_TOPIC_TOKEN": token, "CQRS_QUEUE": subscription, "CQRS_RETRY_DELAY_S": "0.05",
                "CQRS_MAX_RETRIES": "2", "CQRS_TOPIC_MAX_REDELIVER_COUNT": "3",
                "CQRS_RECONNECT_BASE_S": str(RECONNECT_BASE_S)}


@pytest.fixture(scope="module")
def master_server(django_db_blocker: Any) -> Iterator[Master]:
    with django_db_blocker.unblock():
        user = make_user(unique("replica"))
        topic = make_topic(unique("cqrs"), public=False, anonymous=False, dasf=False, policy="cache", consumers=(user,))
    server = start_server(os.environ["DATABASE_URL"], OUTBOX_RELAY_TASKS="1", OUTBOX_TARGET="topic",
                          OUTBOX_TOPIC=topic, OUTBOX_POLL_INTERVAL_S="0.1", OUTBOX_BATCH_SIZE="500")
    yield Master(server, topic, user)
    server.stop()


@pytest.fixture
def wire(master_server: Master) -> Iterator[Master]:
    clear_outbox()  # the server's relay publishes whatever the session's outbox holds
    with override_settings(OUTBOX_TARGET="topic"):  # what this process emits
        yield master_server


class Replica(ConsumerProcess):
    """``cqrs_consume`` on the topic, on subscription ``subscription``."""

    subscription: str = ""


class Refused(ConsumerProcess):
    """``cqrs_consume`` expected to be refused: started once it logged its first refusal."""

    def started(self, line: str) -> bool:
        return "refused" in line


@pytest.fixture
def consumer(wire: Master) -> Iterator[Replica]:
    """The replica's consumer, started first: its subscription exists before anything is published."""
    subscription = unique("replica").replace("-", "_")
    proc = Replica(os.environ["DATABASE_URL"], wire.consumer_env(subscription, make_token(wire.user)))
    proc.subscription = subscription
    proc.start()
    yield proc
    proc.stop()


def emit_event(pk: int, key: str, revision: int, signal: SignalType = SignalType.SAVE, **data: Any) -> None:
    """A change of the replica's hook model ``test_event`` (no master model here: its payload by hand)."""
    with transaction.atomic():
        emit_payload(TransportPayload(signal_type=signal, cqrs_id="test_event", instance_pk=pk, instance_data={
            "id": pk, "cqrs_revision": revision, "cqrs_updated": UPDATED, "key": key, **data}))


def hook_calls(key: str) -> list[tuple[str, int]]:
    return list(replica.HookCall.objects.filter(key=key).order_by("id").values_list("signal", "revision"))


def logged_at(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def all_published() -> bool:
    return not OutboxEvent.objects.exclude(status=Status.PUBLISHED).exists()


def acked_through(topic: str, subscription: str) -> int:
    return Subscription.objects.get(topic__slug=topic, name=subscription).acked_through


def last_sequence(topic: str) -> int:
    return Topic.objects.get(slug=topic).last_sequence


async def test_create_update_and_delete_replicate(consumer: Replica) -> None:
    """A created then updated author and book arrive at their last revision (book mapped); a delete removes both."""
    author = master.Author.objects.create(name="draft")
    book = master.Book.objects.create(title="Dune", author=author)
    author.name = "Frank Herbert"
    author.save()
    await eventually(lambda: replica_state([author.pk]) == {author.pk: ("Frank Herbert", 1)},
                     message="the update replicated")
    await eventually(lambda: replica.Book.objects.filter(pk=book.pk, name="Dune", cqrs_revision=0).exists())
    author.delete()
    await eventually(lambda: not replica.Author.objects.filter(pk=author.pk).exists()
                     and not replica.Book.objects.filter(pk=book.pk).exists(), message="both deleted")


async def test_replica_down_during_200_changes_catches_up(wire: Master, consumer: Replica) -> None:
    """With the consumer stopped, 200 changes (creates, updates, deletes) are published; started again,
    the replica holds exactly the master's rows and revisions."""
    consumer.stop()
    pks = churn(80, 50, 20)
    await eventually(all_published, timeout=60, message="the relay published all 200 changes")
    assert replica_state(pks) == {}
    consumer.start()
    expected = master_state(pks)
    assert len(expected) == 60 and sum(revision for _, revision in expected.values()) == 100
    await eventually(lambda: replica_state(pks) == expected, timeout=60, message="the replica caught up")


async def test_killed_replica_loses_nothing(consumer: Replica) -> None:
    """After a SIGKILL mid-stream (a part applied) and a restart, every instance ends at its last revision."""
    with transaction.atomic():
        authors = [master.Author.objects.create(name="r0") for _ in range(60)]
    for revision in range(1, 5):
        with transaction.atomic():
            for author in authors:
                author.name = f"r{revision}"
                author.save()
    pks = [author.pk for author in authors]
    await eventually(lambda: replica.Author.objects.filter(pk__in=pks).exists(), message="some applied")
    consumer.kill()
    assert replica.Author.objects.filter(pk__in=pks, cqrs_revision=4).count() < len(pks), (
        "killed after everything was applied: the test proves nothing")
    consumer.start()
    await eventually(lambda: replica_state(pks) == dict.fromkeys(pks, ("r4", 4)), timeout=60,
                     message="every instance at revision 4")


@pytest.mark.server_errors(r"CQRS SAVE failed after 2 retries")
async def test_failing_apply_is_retried_then_dead_lettered(wire: Master, consumer: Replica) -> None:
    """A change whose apply keeps failing is retried CQRS_MAX_RETRIES times, then moved by the server to
    the subscription's dead letter topic; other instances' later changes are applied meanwhile."""
    key, pk = unique("fail"), random.randrange(10**8, 2 * 10**9)
    emit_event(pk, key, 0, fail=True)
    later = master.Author.objects.create(name=unique("later"))
    await eventually(lambda: replica_state([later.pk]) == {later.pk: (later.name, 0)},
                     message="another instance's later change")
    dead_letters = f"{wire.topic}-{consumer.subscription}-DLQ"
    await eventually(lambda: Message.objects.filter(topic__slug=dead_letters).exists(), timeout=30,
                     message="the dead letter moved")
    [dead] = Message.objects.filter(topic__slug=dead_letters)
    event = json.loads(base64.b64decode(dead.payload or ""))
    assert (event["type"], event["data"]["instance_data"]["key"]) == ("cqrs.test_event.save", key)
    topic = Topic.objects.get(slug=dead_letters)
    assert (topic.is_public, topic.supports_dasf) == (False, False), "the dead letters are the replica's alone"
    assert sum("CQRS SAVE failed (retry" in line for line in consumer.output) == 2
    await eventually(lambda: acked_through(wire.topic, consumer.subscription) == last_sequence(wire.topic),
                     message="nothing left unacked on the subscription")


async def test_retried_change_is_not_overtaken_by_a_later_one(consumer: Replica) -> None:
    """A SAVE that fails once, then a DELETE of the same instance: the DELETE waits for the retry."""
    key, pk = unique("order"), random.randrange(10**8, 2 * 10**9)
    emit_event(pk, key, 0, fail_once=True)
    emit_event(pk, key, 1, SignalType.DELETE)
    await eventually(lambda: len(hook_calls(key)) == 3, message="the failure, the retry and the delete")
    assert hook_calls(key) == [("FAILED", 0), ("SAVE", 0), ("DELETE", 1)]


@pytest.mark.server_errors(r"CQRS event dead-lettered")
async def test_malformed_change_reaches_the_dead_letter_topic(wire: Master, consumer: Replica) -> None:
    """A change of a replica model here that is malformed (another data content type) is never applied: it
    is nacked until the server moves it, unchanged, to the subscription's dead letter topic (a WARNING)."""
    pk = random.randrange(10**8, 2 * 10**9)
    event_id = unique("malformed")
    with transaction.atomic():
        emit("cqrs.test_author.save", "/cqrs", {"signal_type": "SAVE", "cqrs_id": "test_author", "instance_pk": pk,
                                                "instance_data": {"id": pk, "name": "x", "cqrs_revision": 0,
                                                                  "cqrs_updated": UPDATED}},
             id=event_id, datacontenttype="application/json", key=f"test_author:{pk}")
    dead_letters = f"{wire.topic}-{consumer.subscription}-DLQ"
    await eventually(lambda: Message.objects.filter(topic__slug=dead_letters).exists(), timeout=30,
                     message="the malformed change moved")
    [dead] = Message.objects.filter(topic__slug=dead_letters)
    assert json.loads(base64.b64decode(dead.payload or ""))["id"] == event_id
    assert not replica.Author.objects.filter(pk=pk).exists()
    [warning] = [line for line in consumer.output if "CQRS event dead-lettered" in line]
    assert " WARNING " in warning and "datacontenttype 'application/json'" in warning
    await eventually(lambda: acked_through(wire.topic, consumer.subscription) == last_sequence(wire.topic),
                     message="nothing left unacked on the subscription")


async def test_master_server_restart_with_a_retry_pending_loses_nothing(wire: Master) -> None:
    """The master's server stopped and started again while a retry waits and later changes of its instance
    are held: the consumer reconnects, and every change is applied once more, in order, nothing lost."""
    subscription = unique("restart").replace("-", "_")
    env = {**wire.consumer_env(subscription, make_token(wire.user)), "CQRS_RETRY_DELAY_S": "5"}
    proc = Replica(os.environ["DATABASE_URL"], env)
    proc.start()
    try:
        key, pk = unique("restart"), random.randrange(10**8, 2 * 10**9)
        emit_event(pk, key, 0, fail_once=True)
        emit_event(pk, key, 1)
        emit_event(pk, key, 2, SignalType.DELETE)
        await eventually(lambda: hook_calls(key) == [("FAILED", 0)], message="the first apply failed")
        await eventually(all_published, message="the later changes on the topic")
        wire.server.stop()
        assert hook_calls(key) == [("FAILED", 0)], "the retry ran before the server stopped: nothing was pending"
        wire.server.restart()
        await eventually(lambda: len(hook_calls(key)) == 4, timeout=60, message="the three changes after the restart")
        assert hook_calls(key) == [("FAILED", 0), ("SAVE", 0), ("SAVE", 1), ("DELETE", 2)]
        assert any("reconnecting" in line for line in proc.output)
    finally:
        proc.stop()


async def test_debug_log_never_shows_the_token(wire: Master) -> None:
    """With SWITCHYARD_LOG_LEVEL=DEBUG the consumer logs DEBUG lines, but never its token (websockets logs
    each handshake header at DEBUG)."""
    subscription = unique("debug").replace("-", "_")
    token = make_token(wire.user)
    env = {**wire.consumer_env(subscription, token), "SWITCHYARD_LOG_LEVEL": "DEBUG"}
    proc = Replica(os.environ["DATABASE_URL"], env)
    proc.start()
    try:
        with transaction.atomic():
            emit("com.example.order.created", "/shop", {"order": 1}, key="order-1")  # skipped, at DEBUG
        author = master.Author.objects.create(name=unique("debug"))
        await eventually(lambda: replica_state([author.pk]) == {author.pk: (author.name, 0)})
        assert any(" DEBUG " in line and "skipped" in line for line in proc.output), "DEBUG was not on"
        assert token not in "".join(proc.output)
    finally:
        proc.stop()


async def test_squatted_dead_letter_topic_is_refused(wire: Master) -> None:
    """A dead letter topic someone else made under the subscription's name refuses the subscription
    (409, a WARNING naming it): the replica never sends its dead letters there."""
    subscription = unique("squatted").replace("-", "_")
    squatter = make_user(unique("squatter"))
    Topic.objects.create(slug=f"{wire.topic}-{subscription}-DLQ", supports_dasf=False, created_by=f"user:{squatter.pk}")

    proc = Refused(os.environ["DATABASE_URL"], wire.consumer_env(subscription, make_token(wire.user)))
    proc.start()
    try:
        [line] = [line for line in proc.output if "refused" in line]
        assert " WARNING " in line and "409 dead letter topic" in line and "created by another principal" in line
        assert not Subscription.objects.filter(topic__slug=wire.topic, name=subscription).exists()
    finally:
        proc.stop()


async def test_other_events_on_the_topic_are_skipped(wire: Master, consumer: Replica) -> None:
    """Events that are no CQRS change, and changes of models not replicated here, are acked unapplied
    and logged at no WARNING; the replica's own changes go on."""
    with transaction.atomic():
        emit("com.example.order.created", "/shop", {"order": 1}, key="order-1")
        emit("cqrs.not_replicated_here.save", "/cqrs", {"signal_type": "SAVE", "cqrs_id": "not_replicated_here",
                                                        "instance_pk": 1, "instance_data": {"id": 1}},
             datacontenttype=CONTENT_TYPE, key="not_replicated_here:1")
    marker = master.Author.objects.create(name=unique("marker"))
    await eventually(lambda: replica_state([marker.pk]) == {marker.pk: (marker.name, 0)}, message="the marker")
    await eventually(all_published, message="all three published")
    await eventually(lambda: acked_through(wire.topic, consumer.subscription) == last_sequence(wire.topic),
                     message="the skipped events acked")
    assert not [line for line in consumer.output if "skipped" in line], "normal traffic logged above DEBUG"


async def test_token_without_consume_right_is_refused_and_retried(wire: Master) -> None:
    """A token whose user may not consume the topic is refused (403, named in a WARNING) again and again
    with back-off; once the right is granted the consumer subscribes and replicates."""
    user = make_user(unique("stranger"))
    subscription = unique("stranger").replace("-", "_")

    proc = Refused(os.environ["DATABASE_URL"], wire.consumer_env(subscription, make_token(user)))
    proc.start()
    try:
        def refusals() -> list[str]:
            return [line for line in proc.output if "refused" in line]

        await eventually(lambda: len(refusals()) >= 2, timeout=30, message="refused twice")
        first, second = refusals()[:2]
        assert " WARNING " in first and "403 not allowed to consume" in first and "consume right" in first
        assert "(1 in a row)" in first and "(2 in a row)" in second
        assert logged_at(second) - logged_at(first) >= timedelta(seconds=0.9 * RECONNECT_BASE_S), (
            "retried without back-off")
        assert not any("SWITCHYARD_CQRS_READY" in line for line in proc.output)
        grant(user, Topic.objects.get(slug=wire.topic), "can_consume")
        await eventually(lambda: any("SWITCHYARD_CQRS_READY" in line for line in proc.output), timeout=60,
                         message="subscribed once allowed")
        author = master.Author.objects.create(name=unique("allowed"))
        await eventually(lambda: replica_state([author.pk]) == {author.pk: (author.name, 0)})
    finally:
        proc.stop()


async def test_server_consumes_the_topic_when_configured(wire: Master) -> None:
    """``manage.py serve`` with CQRS_TOPIC and CQRS_QUEUE runs the topic consumer beside the server."""
    subscription = unique("served").replace("-", "_")
    server = start_server(os.environ["DATABASE_URL"], **wire.consumer_env(subscription, make_token(wire.user)))
    try:
        await eventually(lambda: Subscription.objects.filter(topic__slug=wire.topic, name=subscription).exists(),
                         message="the server's consumer subscribed")
        author = master.Author.objects.create(name=unique("served"))
        await eventually(lambda: replica_state([author.pk]) == {author.pk: (author.name, 0)})
    finally:
        server.stop()
