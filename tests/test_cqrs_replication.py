"""CQRS end to end: a Switchyard master (tests/apps/cqrs_master, written here or in a process of its
own) -> the outbox -> ``manage.py outbox_relay`` -> RabbitMQ -> ``manage.py cqrs_consume`` -> a Switchyard
replica (tests/apps/cqrs_replica: other app, same CQRS_IDs), all real processes and a real broker."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from django.test import override_settings

from app.cqrs.events import CONTENT_TYPE
from app.outbox.models import OutboxEvent, Status
from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.cqrs_replication import churn, master_state, replica_state
from tests.outbox import clear_outbox
from tests.protocol import eventually, unique
from tests.servers import ROOT, ConsumerProcess, RelayProcess, server_env
from tests.services import drop_cqrs_layout, require_rabbitmq


@dataclass
class Wire:
    """A RabbitMQ exchange and replica queue of the test's own."""

    url: str
    exchange: str
    queue: str

    @property
    def relay_env(self) -> dict[str, str]:
        return {"AMQP_URL": self.url, "OUTBOX_TARGET": "rabbitmq", "CQRS_EXCHANGE": self.exchange,
                "OUTBOX_POLL_INTERVAL_S": "0.1", "OUTBOX_BATCH_SIZE": "500"}

    @property
    def consumer_env(self) -> dict[str, str]:
        return {"AMQP_URL": self.url, "CQRS_EXCHANGE": self.exchange, "CQRS_QUEUE": self.queue}


@pytest.fixture
async def wire(_db_access: None) -> AsyncIterator[Wire]:
    clear_outbox()  # the relay publishes whatever the session's outbox holds
    box = Wire(require_rabbitmq(), unique("test.cqrs.e2e"), unique("replica_e2e"))
    with override_settings(AMQP_URL=box.url, OUTBOX_TARGET="rabbitmq"):  # what this process emits
        yield box
    await drop_cqrs_layout(box.url, box.queue, box.exchange)


@pytest.fixture
def consumer(wire: Wire) -> Iterator[ConsumerProcess]:
    """The replica's consumer, started first: its queue is declared and bound before anything is published."""
    proc = ConsumerProcess(os.environ["DATABASE_URL"], wire.consumer_env)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def relay(wire: Wire) -> Iterator[RelayProcess]:
    proc = RelayProcess(os.environ["DATABASE_URL"], wire.relay_env)
    yield proc
    proc.stop()


def run_killed_master(name: str, wire: Wire) -> subprocess.CompletedProcess[str]:
    """A ``manage.py shell`` that creates and updates an author (each save committed), prints its pk,
    and SIGKILLs itself."""
    code = ("import os, signal; from tests.apps.cqrs_master.models import Author; "
            f"a = Author.objects.create(name='{name}'); a.name += '!'; a.save(); print(a.pk, flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    return subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=server_env(os.environ["DATABASE_URL"], **wire.relay_env))


async def test_create_and_update_replicate(consumer: ConsumerProcess, relay: RelayProcess) -> None:
    """A created then updated author and book arrive in the replica at their last revision (book mapped)."""
    relay.start()
    author = master.Author.objects.create(name="draft")
    book = master.Book.objects.create(title="Dune", author=author)
    author.name = "Frank Herbert"
    author.save()
    await eventually(lambda: replica_state([author.pk]) == {author.pk: ("Frank Herbert", 1)},
                     message="the update replicated")
    await eventually(lambda: replica.Book.objects.filter(pk=book.pk, name="Dune", cqrs_revision=0).exists())


async def test_delete_replicates(consumer: ConsumerProcess, relay: RelayProcess) -> None:
    """Deleting a master author (cascading to its book) removes both replicas."""
    relay.start()
    author = master.Author.objects.create(name="gone")
    book = master.Book.objects.create(title="lost", author=author)
    await eventually(lambda: replica.Book.objects.filter(pk=book.pk).exists(), message="created first")
    author.delete()
    await eventually(lambda: not replica.Author.objects.filter(pk=author.pk).exists()
                     and not replica.Book.objects.filter(pk=book.pk).exists(), message="both deleted")


async def test_duplicates_and_reordering_leave_the_replica_right(consumer: ConsumerProcess, relay: RelayProcess,
                                                                 wire: Wire) -> None:
    """Every payload published again, shuffled and twice over, once the replica is at the master's state:
    the older copies change nothing."""
    import aio_pika

    relay.start()
    authors = [master.Author.objects.create(name="v0") for _ in range(5)]
    for revision in range(1, 8):
        for author in authors:
            author.name = f"v{revision}"
            author.save()
    pks = [author.pk for author in authors]
    expected = master_state(pks)
    assert set(expected.values()) == {("v7", 7)}
    await eventually(lambda: replica_state(pks) == expected, message="every author at revision 7")
    bodies = [bytes(row.data) for row in OutboxEvent.objects.filter(datacontenttype=CONTENT_TYPE).order_by("id")]
    extra = bodies * 2
    random.Random(15).shuffle(extra)
    connection = await aio_pika.connect(wire.url, timeout=10)
    async with connection:
        channel = await connection.channel()  # publisher confirms: queued before the marker below
        exchange = await channel.get_exchange(wire.exchange)
        for body in extra:
            await exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   json.loads(body)["cqrs_id"])
    marker = master.Author.objects.create(name=unique("marker"))
    await eventually(lambda: replica_state([marker.pk]) == {marker.pk: (marker.name, 0)},
                     message="the marker, queued after the old copies")
    assert replica_state(pks) == expected


async def test_replica_down_during_200_changes_catches_up(consumer: ConsumerProcess, relay: RelayProcess) -> None:
    """With the consumer stopped, 200 changes (creates, updates, deletes; twice the consumer's prefetch)
    are published; started again, the replica holds exactly the master's rows and revisions."""
    consumer.stop()
    relay.start()
    pks = churn(80, 50, 20)
    await eventually(lambda: not OutboxEvent.objects.exclude(status=Status.PUBLISHED).exists(), timeout=60,
                     message="the relay published all 200 changes")
    assert replica_state(pks) == {}
    consumer.start()
    expected = master_state(pks)
    assert len(expected) == 60 and sum(revision for _, revision in expected.values()) == 100
    await eventually(lambda: replica_state(pks) == expected, timeout=60, message="the replica caught up")


async def test_master_killed_right_after_commit_still_replicates(consumer: ConsumerProcess, relay: RelayProcess,
                                                                 wire: Wire) -> None:
    """A master process SIGKILLed right after its commit, before any relay ran: the relay started
    afterwards publishes the change from the outbox, and the replica applies it."""
    name = unique("killed")
    done = run_killed_master(name, wire)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pk = int(done.stdout.split()[-1])
    relay.start()
    await eventually(lambda: replica_state([pk]) == {pk: (f"{name}!", 1)}, message="the killed master's change")
