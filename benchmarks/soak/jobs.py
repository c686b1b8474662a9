"""The soak's jobs beside the broker traffic: outbox events emitted over HTTP and counted where they
arrive, and work requests submitted over HTTP and completed by worker sockets.

- ``Outbox``: ``POST /api/v1/outbox/events`` one event at a time; arrivals are counted on a Switchyard
  topic (a consumer socket: target ``topic``) or on RabbitMQ (an exclusive queue bound to the relay's
  exchange: benchmarks/outbox.py's ``Rabbit``). Each event's data holds the run and its number.
- ``Work``: ``POST /api/v1/work-requests`` (``noop``), run by work_clients.py's ``Fleet``; completions are
  read from the database (a worker is told nothing when its completion commits).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed

from benchmarks import wire
from benchmarks.outbox import Rabbit
from benchmarks.outbox import until as until_true
from benchmarks.soak.traffic import WARMUP_TIMEOUT_S, Errors, paced
from benchmarks.work_clients import Database, Fleet, Http

EVENT_TYPE = "com.example.soak"
NOOP = {"task_name": "noop", "task_data": {}}
# HTTP connections per sender: a slow answer does not lower the offered rate (up to this many at once).
CONNECTIONS = 4


class Pool:
    """Kept-alive HTTP connections (work_clients.py's ``Http``: one request at a time each), lent out."""

    def __init__(self, base: str, key: str, size: int = CONNECTIONS) -> None:
        self.size = size
        self.all = [Http(base, key) for _ in range(size)]
        self.idle: asyncio.Queue[Http] = asyncio.Queue()
        for http in self.all:
            self.idle.put_nowait(http)

    async def post(self, path: str, body: Any) -> tuple[int, bytes]:
        http = await self.idle.get()
        try:
            return await http.post(path, body)
        except (OSError, asyncio.IncompleteReadError) as exc:  # no answer: status 0, counted as refused
            await http.close()
            return 0, repr(exc).encode()
        finally:
            self.idle.put_nowait(http)

    async def close(self) -> None:
        for http in self.all:
            await http.close()
# Outbox rows not yet published: the soak's own events and the work requests' state changes.
UNPUBLISHED = "SELECT count(*) FROM outbox_outboxevent WHERE status <> 'published'"


class Outbox:
    def __init__(self, http: Pool, ws_base: str, target: str, destination: str, errors: Errors) -> None:
        self.http, self.ws_base, self.target, self.destination = http, ws_base, target, destination
        self.errors = errors
        self.run = uuid.uuid4().hex[:12]
        self.emitted: set[int] = set()
        self.arrived: set[int] = set()
        self.warmed = asyncio.Event()
        self.rabbit: Rabbit | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def _arrival(self, data: Any) -> None:
        if isinstance(data, dict) and data.get("soak") == self.run:
            n = data.get("n")
            if isinstance(n, int):
                self.arrived.add(n)
            else:
                self.warmed.set()

    async def _read_topic(self) -> None:
        """The target topic's consumer: each delivery's payload is a structured CloudEvent."""
        try:
            while True:
                frame = wire.loads(await self.ws.recv(decode=False))
                if frame.get("messageId") is not None:
                    await self.ws.send(wire.ack_of(frame["messageId"]), text=True)
                with contextlib.suppress(ValueError, TypeError, orjson.JSONDecodeError):
                    self._arrival(orjson.loads(base64.b64decode(frame.get("payload") or ""))["data"])
        except ConnectionClosed as exc:
            self.errors.add("outbox consumer closed", str(exc))

    async def _read_rabbit(self, rabbit: Rabbit) -> None:
        """RabbitMQ (binary mode): the body is the event's data; the work requests' events pass by too."""
        seen = 0
        while True:
            for _, body in rabbit.arrivals[seen:]:
                with contextlib.suppress(orjson.JSONDecodeError):
                    self._arrival(orjson.loads(body))
            seen = len(rabbit.arrivals)
            await asyncio.sleep(0.05)

    async def open(self) -> None:
        if self.target == "rabbitmq":
            self.rabbit = Rabbit(self.destination)
            await self.rabbit.open()
            await self.rabbit.listen()
            self.tasks.append(asyncio.create_task(self._read_rabbit(self.rabbit)))
        else:
            self.ws = await wire.open_socket(wire.consumer_url(self.ws_base, self.destination, f"soak-{self.run}"))
            self.tasks.append(asyncio.create_task(self._read_topic()))
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while not self.warmed.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbox: no warm-up event arrived ({self.target})")
            await self.emit({"soak": self.run, "n": "warmup"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.warmed.wait(), 2.0)

    async def emit(self, data: dict[str, Any]) -> bool:
        body: dict[str, Any] = {"type": EVENT_TYPE, "source": "/soak", "data": data, "key": f"k{hash(data['n']) % 8}",
                                "target": self.target}
        if self.target == "topic":
            body["destination"] = self.destination  # RabbitMQ: the relay's exchange, routed by the type
        status, answer = await self.http.post("/api/v1/outbox/events", body)
        if status != 201:
            self.errors.add("outbox emit refused", f"{status}: {answer[:200]!r}")
        return status == 201

    async def drive(self, per_s: float, until: float) -> None:
        async def one(n: int) -> None:
            if await self.emit({"soak": self.run, "n": n}):
                self.emitted.add(n)

        await paced(per_s, until, one, self.http.size)

    async def finish(self, db: Database, deadline: float) -> dict[str, int]:
        await until_true(lambda: not (self.emitted - self.arrived or unpublished(db)), deadline - time.monotonic())
        return {"emitted": len(self.emitted), "arrived": len(self.emitted & self.arrived),
                "lost": len(self.emitted - self.arrived), "unpublished": unpublished(db)}

    async def close(self) -> None:
        await self.http.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.rabbit is not None:
            await self.rabbit.close()
        else:
            await self.ws.close()


def unpublished(db: Database) -> int:
    """Outbox rows not yet published (any source: the work requests' events too)."""
    return int(db.conn.execute(UNPUBLISHED).fetchone()[0])


class Work:
    def __init__(self, http: Pool, ws_url: str, keys: list[str], db: Database, errors: Errors) -> None:
        self.http, self.db, self.errors = http, db, errors
        self.fleet = Fleet(ws_url)
        self.keys = keys
        self.submitted = 0
        self.ids: list[int] = []

    async def open(self) -> None:
        await self.fleet.connect(self.keys)
        await self.fleet.report_metadata()
        await self.submit()
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while self.completed() < self.submitted:  # bounded-poll
            if time.monotonic() > deadline:
                raise RuntimeError("work: the warm-up request did not complete")
            await asyncio.sleep(0.05)

    async def submit(self) -> None:
        status, answer = await self.http.post("/api/v1/work-requests", NOOP)
        if status == 201:
            self.submitted += 1
            self.ids.append(int(orjson.loads(answer)["id"]))
        else:
            self.errors.add("work submit refused", f"{status}: {answer[:200]!r}")

    def completed(self) -> int:
        return self.db.completed()

    async def drive(self, per_s: float, until: float) -> None:
        await paced(per_s, until, lambda _: self.submit(), self.http.size)

    async def finish(self, deadline: float) -> dict[str, int]:
        await until_true(lambda: self.completed() >= self.submitted, deadline - time.monotonic())
        if self.fleet.errors:
            self.errors.add("worker error frame", str(self.fleet.errors[0]), len(self.fleet.errors))
        # By id, not by count: a request created although its POST got no answer (counted refused) must
        # not make up for one that was lost.
        lost = sum(1 for request_id in self.ids if self.db.status(request_id) != "completed")
        return {"submitted": self.submitted, "completed": self.submitted - lost, "lost": lost}

    async def close(self) -> None:
        await self.http.close()
        await self.fleet.close()
