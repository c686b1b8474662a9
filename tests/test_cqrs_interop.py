"""CQRS interoperability with the real django-cqrs 3.1.0, both directions, on a real RabbitMQ:
tests/djcqrs_project runs django-cqrs in .venv-djcqrs (``make djcqrs-env``) against Switchyard's
master (outbox -> ``outbox_relay``) and Switchyard's replica (``cqrs_consume``): SAVE and DELETE,
SYNC (every row, and to one queue) by either side's ``cqrs_sync``, tracked fields' previous_data,
and dead letters that the other side's ``cqrs_dead_letters retry`` brings back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.cqrs_commands import run
from tests.outbox import clear_outbox
from tests.protocol import eventually, unique
from tests.servers import ROOT, ConsumerProcess, RelayProcess
from tests.services import drop_cqrs_layout, require_rabbitmq

# Wire compatibility does not change with Switchyard's database: run once, in the SQLite pass.
pytestmark = pytest.mark.wire_interop

PROJECT = ROOT / "tests" / "djcqrs_project"
DJCQRS_PYTHON = ROOT / ".venv-djcqrs" / "bin" / "python"
_ids = itertools.count(random.randrange(10**8, 2 * 10**9, 10**6) + 500_000)
# The CQRS_IDs of the django-cqrs project's replica models (tests/djcqrs_project/interop/models.py).
DJCQRS_REPLICA_IDS = ("test_author", "test_book", "test_counter", "test_event")
# Both replicas give up after as many retries (djcqrs_settings.py CQRS['replica']).
MAX_RETRIES = 2


def require_djcqrs() -> Path:
    """The interop virtualenv's python; skipped when absent, except under CI=true, where that is a failure."""
    if DJCQRS_PYTHON.exists():
        return DJCQRS_PYTHON
    reason = f"{DJCQRS_PYTHON.parent.parent.name} is missing (make djcqrs-env installs django-cqrs 3.1.0)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true requires it")
    pytest.skip(reason)


@dataclass
class DjangoCqrs:
    """The django-cqrs project: its SQLite database, exchange and queue (the test's own)."""

    python: Path
    database: Path
    url: str
    exchange: str
    queue: str

    @property
    def env(self) -> dict[str, str]:
        # Not the tests' environment: that names Switchyard's settings and database.
        return {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "DJCQRS_DATABASE": str(self.database),
                "DJCQRS_AMQP_URL": self.url, "DJCQRS_EXCHANGE": self.exchange, "DJCQRS_QUEUE": self.queue}

    def manage(self, *args: str) -> str:
        done = subprocess.run([str(self.python), "manage.py", *args], cwd=PROJECT, env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def rows(self, table: str) -> dict[int, tuple[str, int]]:
        return {pk: (name, revision) for pk, name, revision in self.query(
            f"SELECT id, name, cqrs_revision FROM interop_{table}")}

    def query(self, sql: str, *params: Any) -> list[Any]:
        """Run ``sql`` on the project's database (behind django-cqrs's back when it writes)."""
        with contextlib.closing(sqlite3.connect(self.database, timeout=10)) as db, db:
            return list(db.execute(sql, params))


@pytest.fixture(scope="session")
def djcqrs_migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's database, migrated once: each test starts from a copy."""
    # Migrating connects to no broker: the names only satisfy django-cqrs's settings check.
    template = DjangoCqrs(require_djcqrs(), tmp_path_factory.mktemp("djcqrs") / "template.sqlite3",
                          "amqp://unused/", "unused", "unused")
    template.manage("migrate", "--noinput", "-v0")
    return template.database


@pytest.fixture
async def djcqrs(_db_access: None, tmp_path: Path, djcqrs_migrated: Path) -> AsyncIterator[DjangoCqrs]:
    project = DjangoCqrs(require_djcqrs(), tmp_path / "djcqrs.sqlite3", require_rabbitmq(),
                         unique("test.cqrs.interop"), unique("djcqrs_replica"))
    shutil.copyfile(djcqrs_migrated, project.database)
    clear_outbox()
    with override_settings(AMQP_URL=project.url, OUTBOX_TARGET="rabbitmq", CQRS_EXCHANGE=project.exchange):
        yield project
    await drop_cqrs_layout(project.url, project.queue, project.exchange)


@pytest.fixture
async def djcqrs_queue(djcqrs: DjangoCqrs) -> None:
    """django-cqrs's replica queue, declared and bound here first as its consumer declares them (it
    prints nothing once ready), so nothing published before it consumes is lost."""
    import aio_pika

    connection = await aio_pika.connect(djcqrs.url, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(djcqrs.exchange, "topic", durable=True)
        queue = await channel.declare_queue(djcqrs.queue, durable=True)
        for cqrs_id in DJCQRS_REPLICA_IDS:
            await queue.bind(exchange, cqrs_id)


@pytest.fixture
def djcqrs_consumer(djcqrs: DjangoCqrs, djcqrs_queue: None, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """django-cqrs's own ``manage.py cqrs_consume``; what it logged must hold no traceback."""
    log_path = tmp_path / "djcqrs_consume.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(djcqrs.python), "manage.py", "cqrs_consume"], cwd=PROJECT, env=djcqrs.env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


@pytest.fixture
def relay(djcqrs: DjangoCqrs) -> Iterator[RelayProcess]:
    proc = RelayProcess(os.environ["DATABASE_URL"], {
        "AMQP_URL": djcqrs.url, "OUTBOX_TARGET": "rabbitmq", "CQRS_EXCHANGE": djcqrs.exchange,
        "OUTBOX_POLL_INTERVAL_S": "0.1"})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def consumer(djcqrs: DjangoCqrs) -> Iterator[ConsumerProcess]:
    """Switchyard's replica consumer on the django-cqrs project's exchange."""
    proc = ConsumerProcess(os.environ["DATABASE_URL"], {
        "AMQP_URL": djcqrs.url, "CQRS_EXCHANGE": djcqrs.exchange, "CQRS_QUEUE": djcqrs.queue,
        "CQRS_MAX_RETRIES": str(MAX_RETRIES)})
    proc.start()
    yield proc
    proc.stop()


async def test_django_cqrs_replica_applies_switchyard_master(djcqrs: DjangoCqrs, relay: RelayProcess,
                                                             djcqrs_consumer: subprocess.Popen[bytes]) -> None:
    """django-cqrs's consumer applies Switchyard's create, update (book mapped) and delete."""
    kept = master.Author.objects.create(name="Ursula")
    book = master.Book.objects.create(title="The Dispossessed", author=kept)
    kept.name = "Ursula K. Le Guin"
    kept.save()
    gone = master.Author.objects.create(name="gone")
    await eventually(lambda: gone.pk in djcqrs.rows("authorreplica"), message="django-cqrs created the row")
    gone.delete()
    await eventually(lambda: djcqrs.rows("authorreplica") == {kept.pk: ("Ursula K. Le Guin", 1)},
                     message="django-cqrs applied the update and the delete")
    assert djcqrs.rows("bookreplica") == {book.pk: ("The Dispossessed", 0)}


async def test_switchyard_replica_applies_django_cqrs_master(djcqrs: DjangoCqrs, consumer: ConsumerProcess) -> None:
    """Switchyard's consumer applies what django-cqrs's master publishes on commit: create, update, delete."""
    kept, gone = next(_ids), next(_ids)
    djcqrs.manage("shell", "-c", (
        f"from interop.models import Writer; Writer.objects.create(id={kept}, name='Ursula'); "
        f"Writer.objects.create(id={gone}, name='gone')"))
    await eventually(lambda: replica.Author.objects.filter(pk__in=[kept, gone]).count() == 2,
                     message="both created")
    djcqrs.manage("shell", "-c", (
        f"from interop.models import Writer; Writer.objects.get(id={gone}).delete(); "
        f"w = Writer.objects.get(id={kept}); w.name = 'Le Guin'; w.save()"))
    # One consumer, in queue order: once the update is there, the delete published before it was applied.
    await eventually(lambda: replica.Author.objects.filter(pk=kept, cqrs_revision=1).exists(),
                     message="the update applied")
    assert not replica.Author.objects.filter(pk=gone).exists()
    row = replica.Author.objects.get(pk=kept)
    assert (row.name, row.cqrs_revision) == ("Le Guin", 1)


# --- AMQP from the test's side ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def amqp(djcqrs: DjangoCqrs) -> AsyncIterator[Any]:
    """A channel on the project's broker."""
    import aio_pika

    connection = await aio_pika.connect(djcqrs.url, timeout=10)
    async with connection:
        yield await connection.channel()


@contextlib.asynccontextmanager
async def other_replica(djcqrs: DjangoCqrs) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Another replica's queue, bound as django-cqrs binds one to test_author: how many messages it holds."""
    async with amqp(djcqrs) as channel:
        exchange = await channel.get_exchange(djcqrs.exchange)
        queue = await channel.declare_queue(unique("other_replica"), durable=True)
        for routing_key in ("test_author", f"cqrs.{queue.name}.test_author"):
            await queue.bind(exchange, routing_key)

        async def count() -> int:
            declared = await channel.declare_queue(queue.name, durable=True, passive=True)
            return int(declared.declaration_result.message_count or 0)

        try:
            yield count
        finally:
            await channel.queue_delete(queue.name)


async def publish(djcqrs: DjangoCqrs, body: dict[str, Any]) -> None:
    """Publish ``body`` as a django-cqrs master does (routing key its cqrs_id)."""
    import aio_pika

    async with amqp(djcqrs) as channel:
        exchange = await channel.get_exchange(djcqrs.exchange)
        await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="text/plain",
                                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), body["cqrs_id"])


async def dead_letters_arrive(djcqrs: DjangoCqrs, count: int) -> None:
    """Wait until ``dead_letter_<queue>`` holds ``count`` messages (left there for a retry command)."""
    async with amqp(djcqrs) as channel, asyncio.timeout(30):
        while True:
            # Declared as both replicas declare it: this may run before their consumer does.
            declared = await channel.declare_queue(f"dead_letter_{djcqrs.queue}", durable=True)
            if declared.declaration_result.message_count == count:
                return
            await asyncio.sleep(0.05)  # bounded-poll


def event(pk: int, key: str, **data: Any) -> dict[str, Any]:
    """A test_event SAVE that a replica gives up on at once (out of retries) the first time it fails."""
    return {"signal_type": "SAVE", "cqrs_id": "test_event", "instance_pk": pk, "previous_data": None,
            "instance_data": {"id": pk, "key": key, "cqrs_revision": 0, "cqrs_updated": "2025-01-02T03:04:05+00:00",
                              **data},
            "correlation_id": None, "retries": MAX_RETRIES, "expires": None, "meta": None}


# --- SYNC ------------------------------------------------------------------------------------------


async def test_django_cqrs_applies_switchyard_sync_of_every_row(djcqrs: DjangoCqrs, relay: RelayProcess,
                                                                djcqrs_consumer: subprocess.Popen[bytes]) -> None:
    """Switchyard's ``cqrs_sync -f '{}'`` re-sends every row; django-cqrs applies the SYNCs over drifted
    rows of the same revision (which a SAVE would leave, as duplicates)."""
    wanted = {master.Counter.objects.create(views=views).pk: views for views in (3, 4)}

    def views() -> dict[int, int]:
        return {pk: n for pk, n in djcqrs.query("SELECT id, views FROM interop_counterreplica") if pk in wanted}

    await eventually(lambda: views() == wanted, message="django-cqrs created the rows")
    djcqrs.query("UPDATE interop_counterreplica SET views = -1")
    out, _ = run("cqrs_sync", "-cid", "test_counter", "-f", "{}")
    assert f"{master.Counter.objects.count()} instance(s) synced." in out
    await eventually(lambda: views() == wanted, message="the SYNCs restored the rows")


async def test_django_cqrs_applies_switchyard_sync_to_its_queue_alone(
        djcqrs: DjangoCqrs, relay: RelayProcess, djcqrs_consumer: subprocess.Popen[bytes]) -> None:
    """``cqrs_sync -q <queue>`` reaches django-cqrs's queue (``cqrs.<queue>.<cqrs_id>``) and no other replica's."""
    author = master.Author.objects.create(name="Le Guin")
    await eventually(lambda: author.pk in djcqrs.rows("authorreplica"), message="django-cqrs created the row")
    async with other_replica(djcqrs) as other_count:
        djcqrs.query("UPDATE interop_authorreplica SET name = 'drifted' WHERE id = ?", author.pk)
        out, _ = run("cqrs_sync", "-cid", "test_author", "-f", json.dumps({"id": author.pk}), "-q", djcqrs.queue)
        assert "1 instance(s) synced." in out
        await eventually(lambda: djcqrs.rows("authorreplica")[author.pk] == ("Le Guin", 0),
                         message="the SYNC restored the row")
        # Routed when published: a copy for the other queue would be there by now.
        assert await other_count() == 0


async def test_switchyard_applies_django_cqrs_sync_of_every_row(djcqrs: DjangoCqrs, consumer: ConsumerProcess) -> None:
    """django-cqrs's ``cqrs_sync -f '{}'`` SYNCs are applied by Switchyard over drifted rows of the same revision."""
    ids = [next(_ids), next(_ids)]
    djcqrs.manage("shell", "-c",
                  f"from interop.models import Writer\nfor i in {ids}: Writer.objects.create(id=i, name='w')")
    rows = replica.Author.objects.filter(pk__in=ids)
    await eventually(lambda: rows.count() == 2, message="both created")
    rows.update(name="drifted")
    assert "2 instance(s) synced." in djcqrs.manage("cqrs_sync", "-cid", "test_author", "-f", "{}")
    await eventually(lambda: sorted(rows.values_list("name", "cqrs_revision")) == [("w", 0), ("w", 0)],
                     message="the SYNCs restored the rows")


async def test_switchyard_applies_django_cqrs_sync_to_its_queue_alone(djcqrs: DjangoCqrs,
                                                                       consumer: ConsumerProcess) -> None:
    """django-cqrs's ``cqrs_sync -q <queue>`` reaches Switchyard's queue and no other replica's."""
    pk = next(_ids)
    djcqrs.manage("shell", "-c", f"from interop.models import Writer; Writer.objects.create(id={pk}, name='w')")
    row = replica.Author.objects.filter(pk=pk)
    await eventually(row.exists, message="created")
    async with other_replica(djcqrs) as other_count:
        row.update(name="drifted")
        out = djcqrs.manage("cqrs_sync", "-cid", "test_author", "-f", json.dumps({"id": pk}), "-q", djcqrs.queue)
        assert "1 instance(s) synced." in out
        await eventually(lambda: row.get().name == "w", message="the SYNC restored the row")
        assert await other_count() == 0


# --- tracked fields --------------------------------------------------------------------------------


async def test_django_cqrs_replica_gets_switchyard_tracked_fields(djcqrs: DjangoCqrs, relay: RelayProcess,
                                                                  djcqrs_consumer: subprocess.Popen[bytes]) -> None:
    """A Switchyard master's CQRS_TRACKED_FIELDS reach django-cqrs's cqrs_save as previous_data, in django-cqrs's
    form: a creation names the foreign key by its column, an update by its field."""
    first, second = master.Author.objects.create(name="a"), master.Author.objects.create(name="b")
    book = master.Book.objects.create(title="draft", author=first)
    book.title = "final"
    book.save()
    book = master.Book.objects.get(pk=book.pk)
    book.author = second
    book.save()

    def received() -> list[tuple[int, Any]]:
        return [(revision, json.loads(previous)) for revision, previous in djcqrs.query(
            "SELECT revision, previous_data FROM interop_received WHERE book_id = ? ORDER BY id", book.pk)]

    await eventually(lambda: len(received()) == 3, message="three saves received")
    assert received() == [(0, {"title": None, "author_id": None}), (1, {"title": "draft"}), (2, {"author": first.pk})]


async def test_switchyard_replica_gets_django_cqrs_tracked_fields(djcqrs: DjangoCqrs,
                                                                  consumer: ConsumerProcess) -> None:
    """django-cqrs's tracked fields reach Switchyard's replica hooks (cqrs_create, cqrs_update) as previous_data."""
    first, second, pk = next(_ids), next(_ids), next(_ids)
    djcqrs.manage("shell", "-c", (
        f"from interop.models import Review, Writer; a = Writer.objects.create(id={first}, name='a'); "
        f"b = Writer.objects.create(id={second}, name='b'); "
        f"r = Review.objects.create(id={pk}, text='draft', writer=a); "
        "r.text = 'final'; r.save(); r.writer = b; r.save()"))
    await eventually(lambda: replica.Review.objects.filter(pk=pk, cqrs_revision=2).exists(), message="both updates")
    assert replica.Review.objects.get(pk=pk).previous_data_log == [
        {"text": None, "writer_id": None}, {"text": "draft"}, {"writer": first}]


# --- dead letters ----------------------------------------------------------------------------------


async def test_switchyard_retries_django_cqrs_dead_letter(djcqrs: DjangoCqrs,
                                                           djcqrs_consumer: subprocess.Popen[bytes]) -> None:
    """A payload django-cqrs's replica gave up on lands in dead_letter_<queue>; Switchyard's
    ``cqrs_dead_letters retry`` sends it back with retries 0, and django-cqrs applies it."""
    pk, key = next(_ids), unique("dead")
    await publish(djcqrs, event(pk, key))
    await dead_letters_arrive(djcqrs, 1)
    with override_settings(CQRS_QUEUE=djcqrs.queue):
        out, _ = await asyncio.wait_for(asyncio.to_thread(run, "cqrs_dead_letters", "retry"), 30)
    assert out.splitlines()[:2] == ["Total dead letters: 1", "Retrying: 1/1"]
    assert json.loads(out.splitlines()[2])["retries"] == 0
    await eventually(lambda: djcqrs.query("SELECT key FROM interop_eventreplica WHERE id = ?", pk) == [(key,)],
                     message="django-cqrs applied the retried payload")


@pytest.mark.server_errors(r"CQRS SAVE failed after 2 retries, dead-lettered")
async def test_django_cqrs_retries_switchyard_dead_letter(djcqrs: DjangoCqrs, consumer: ConsumerProcess) -> None:
    """A payload Switchyard's replica gave up on lands in dead_letter_<queue>; django-cqrs's
    ``cqrs_dead_letters retry`` sends it back with retries 0, and Switchyard applies it."""
    pk, key = next(_ids), unique("dead")
    await publish(djcqrs, event(pk, key, fail_once=True))
    await dead_letters_arrive(djcqrs, 1)
    out = djcqrs.manage("cqrs_dead_letters", "retry")
    assert out.splitlines()[:2] == ["Total dead letters: 1", "Retrying: 1/1"]
    calls = replica.HookCall.objects.filter(key=key)
    await eventually(lambda: calls.filter(signal="SAVE").exists(), message="Switchyard applied the retried payload")
    assert list(calls.order_by("id").values_list("signal", "revision")) == [("FAILED", 0), ("SAVE", 0)]
