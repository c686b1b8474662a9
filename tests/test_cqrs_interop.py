"""CQRS interoperability with the real django-cqrs 3.1.0, both directions, on a real RabbitMQ:
tests/djcqrs_project runs django-cqrs in .venv-djcqrs (``make djcqrs-env``) against Switchyard's
master (outbox -> ``outbox_relay``) and Switchyard's replica (``cqrs_consume``)."""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.test import override_settings

from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.outbox import clear_outbox
from tests.protocol import eventually, unique
from tests.servers import ROOT, ConsumerProcess, RelayProcess
from tests.services import require_rabbitmq

PROJECT = ROOT / "tests" / "djcqrs_project"
DJCQRS_PYTHON = ROOT / ".venv-djcqrs" / "bin" / "python"
_ids = itertools.count(random.randrange(10**8, 2 * 10**9, 10**6) + 500_000)


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
        with sqlite3.connect(self.database, timeout=10) as db:
            return {pk: (name, revision) for pk, name, revision in db.execute(
                f"SELECT id, name, cqrs_revision FROM interop_{table}")}


@pytest.fixture
async def djcqrs(_db_access: None, tmp_path: Path) -> AsyncIterator[DjangoCqrs]:
    import aio_pika

    project = DjangoCqrs(require_djcqrs(), tmp_path / "djcqrs.sqlite3", require_rabbitmq(),
                         unique("test.cqrs.interop"), unique("djcqrs_replica"))
    project.manage("migrate", "--noinput", "-v0")
    clear_outbox()
    with override_settings(AMQP_URL=project.url, OUTBOX_TARGET="rabbitmq", CQRS_EXCHANGE=project.exchange):
        yield project
    connection = await aio_pika.connect(project.url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for name in (project.queue, f"dead_letter_{project.queue}"):
            await channel.queue_delete(name)
        await channel.exchange_delete(project.exchange)


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
        for cqrs_id in ("test_author", "test_book"):
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
        "AMQP_URL": djcqrs.url, "CQRS_EXCHANGE": djcqrs.exchange, "CQRS_QUEUE": djcqrs.queue})
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
