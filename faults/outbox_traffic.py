"""The outbox row's traffic (faults/outbox_rows.py): the run's own exchanges, queues and database, the
CQRS master application in a process of its own, and events emitted over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import urllib.error
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from faults.master_writer import CHANGE, READY
from faults.scenario import Profile
from tests.api_client import call
from tests.databases import POSTGRES_ADMIN_URL, new_database_url
from tests.outbox import AmqpInbox
from tests.servers import ServerProcess, manage_many, migrated_database_url, server_env
from tests.services import drop_cqrs_layout

APPS = "tests.apps.cqrs_master,tests.apps.cqrs_replica"
KEYS_PER_LANE = 2
POLL_S = 0.02


@dataclass
class Wire:
    """The run's own exchanges and queues on the machine's RabbitMQ."""

    url: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def events(self) -> str:
        return f"faults.outbox.{self.tag}"

    @property
    def inbox(self) -> str:
        return f"faults.outbox.inbox.{self.tag}"

    @property
    def cqrs(self) -> str:
        return f"faults.cqrs.{self.tag}"

    @property
    def replica(self) -> str:
        return f"faults_replica_{self.tag}"

    def env(self) -> dict[str, str]:
        return {"SWITCHYARD_APPS": APPS, "AMQP_URL": self.url, "OUTBOX_TARGET": "rabbitmq",
                "OUTBOX_AMQP_EXCHANGE": self.events, "CQRS_EXCHANGE": self.cqrs}

    def box(self, keep: bool) -> AmqpInbox:
        return AmqpInbox(self.url, self.events, queue=self.inbox, durable=True, keep=keep)

    @contextlib.asynccontextmanager
    async def depth(self) -> AsyncIterator[Callable[[], Awaitable[int]]]:
        """A probe of how many messages the inbox queue holds (none is consumed before the end: it only
        grows), on one connection for the block."""
        import aio_pika

        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            channel = await connection.channel()

            async def probe() -> int:
                queue = await channel.declare_queue(self.inbox, passive=True)
                return int(queue.declaration_result.message_count or 0)

            yield probe

    async def drop(self) -> None:
        import aio_pika

        await drop_cqrs_layout(self.url, self.replica, self.cqrs)
        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(self.inbox)
            await channel.exchange_delete(self.events)


@dataclass(eq=False)
class MasterWriter(ServerProcess):
    """faults/master_writer.py in a process of its own: its committed changes are read from its output."""

    rate: float = 50.0

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "faults.master_writer", str(self.rate)]

    def started(self, line: str) -> bool:
        return line.startswith(READY)

    def changes(self) -> list[tuple[str, int, int]]:
        rows = [line.split() for line in list(self.output) if line.startswith(CHANGE + " ")]
        return [(op, int(pk), int(revision)) for _, op, pk, revision in rows]


@dataclass
class Emitter:
    """Events POSTed at ``rate`` a second in all by ``lanes`` senders, each one request after the other
    on keys of its own (so each key's events are emitted in the order of their ``n``): the ids the
    server answered 201 for."""

    server: ServerProcess
    key: str
    rate: float
    lanes: int
    emitted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def _emit(self, lane: int, n: int) -> None:
        body = {"type": "com.example.fault.tick", "source": "/faults/outbox", "data": {"n": n},
                "key": f"lane-{lane}-{n % KEYS_PER_LANE}", "target": "rabbitmq"}
        try:
            status, answer = call(self.server, "/outbox/events", "POST", self.key, body)
        except (urllib.error.URLError, OSError) as exc:
            self.refused.append(f"{lane}/{n}: {exc}")
            return
        if status == 201:
            self.emitted.append(answer["id"])
        else:
            self.refused.append(f"{lane}/{n}: {status} {answer}")

    async def _lane(self, lane: int) -> None:
        began, rate = time.monotonic(), self.rate / self.lanes
        for n in range(10**9):
            await asyncio.to_thread(self._emit, lane, n)
            await asyncio.sleep(max(0.0, began + (n + 1) / rate - time.monotonic()))

    async def run(self) -> None:
        await asyncio.gather(*(self._lane(lane) for lane in range(self.lanes)))


def provision(profile: Profile) -> str:
    """A PostgreSQL database of the run's own with the master and replica apps migrated: a copy of
    the session's template when this process's apps include them (under pytest), else migrated here."""
    installed = set(os.environ.get("SWITCHYARD_APPS", "").split(","))
    if installed >= set(APPS.split(",")):
        return migrated_database_url(profile.workdir, "faults_outbox", "postgres")
    url = new_database_url(profile.workdir, "faults_outbox", "postgres")
    manage_many(server_env(url, SWITCHYARD_APPS=APPS), ("migrate", "--noinput", "-v0"))
    return url


def superuser_key(url: str) -> str:
    [key] = manage_many(server_env(url, SWITCHYARD_APPS=APPS),
                        ("createtoken", "faults-outbox", "--create-user", "--superuser"))
    return key


def drop_database(url: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
