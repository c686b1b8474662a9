"""The work benchmark's baseline: a minimal job queue on the same database, pushing to the same workers.

    python -m benchmarks.raw_queue --database-url sqlite:///... --port 0
    # prints "RAW_QUEUE_WS port=N" (worker sockets), then "RAW_QUEUE_READY port=M" (HTTP submissions)

It speaks the subset of Switchyard's protocol that benchmarks/work_loadgen.py uses, so the same load
generator drives both:

- HTTP ``POST /api/v1/work-requests`` (one JSON object) and ``/api/v1/work-requests/bulk`` (a list):
  the jobs are inserted in one transaction, then every idle worker connection looks for work; 201;
- websocket (any path): ``connected`` and ``request_dynamic_metadata`` at once; after ``metadata`` the
  connection takes work; each job is claimed by one UPDATE (``... WHERE id = (SELECT ... ORDER BY
  priority, age LIMIT 1 [FOR UPDATE SKIP LOCKED]) RETURNING ...``) and pushed as
  ``work_request_available``; ``completed`` is one guarded UPDATE, after which that connection looks
  for its next job; a socket that closes gives its running jobs back.

Durable as Switchyard is: every claim and completion is committed (SQLite in WAL with
synchronous=NORMAL, PostgreSQL with its defaults), on one connection used by one thread, as
Switchyard's ORM calls from sockets and views run on one thread. Nothing is authenticated, validated,
counted against a quota or announced as an event; no dependencies, requirements or presence. What
Python and the database on this machine do at best with the same frames and the same commits: the
yardstick the work benchmark measures Switchyard against in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

WS_READY = "RAW_QUEUE_WS port="
READY = "RAW_QUEUE_READY port="
T = TypeVar("T")

COLUMNS = "id, task_name, task_data, priority, attempts, created_at, started_at"
SCHEMA = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS bench_raw_job (id INTEGER PRIMARY KEY AUTOINCREMENT, task_name TEXT NOT NULL, "
        "task_data TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'pending', "
        "result TEXT, worker INTEGER, attempts INTEGER NOT NULL DEFAULT 0, output_data TEXT, "
        "created_at TEXT NOT NULL, started_at TEXT, completed_at TEXT)",
        "CREATE INDEX IF NOT EXISTS bench_raw_job_queue ON bench_raw_job (priority DESC, created_at, id) "
        "WHERE status = 'pending'",
    ],
    "postgres": [
        "CREATE TABLE IF NOT EXISTS bench_raw_job (id BIGSERIAL PRIMARY KEY, task_name TEXT NOT NULL, "
        "task_data JSONB NOT NULL, priority INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'pending', "
        "result TEXT, worker INTEGER, attempts INTEGER NOT NULL DEFAULT 0, output_data JSONB, "
        "created_at TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ, completed_at TIMESTAMPTZ)",
        "CREATE INDEX IF NOT EXISTS bench_raw_job_queue ON bench_raw_job (priority DESC, created_at, id) "
        "WHERE status = 'pending'",
    ],
}
INSERT = "INSERT INTO bench_raw_job (task_name, task_data, priority, created_at) VALUES (%s, %s, %s, %s) RETURNING id"
CLAIM = (
    "UPDATE bench_raw_job SET status = 'running', worker = %s, started_at = %s, attempts = attempts + 1 "
    "WHERE id = (SELECT id FROM bench_raw_job WHERE status = 'pending' ORDER BY priority DESC, created_at, id "
    "LIMIT 1{lock}) RETURNING " + COLUMNS
)
COMPLETE = (
    "UPDATE bench_raw_job SET status = 'completed', result = %s, output_data = %s, completed_at = %s "
    "WHERE id = %s AND status = 'running' AND worker = %s"
)
RELEASE = "UPDATE bench_raw_job SET status = 'pending', worker = NULL, started_at = NULL WHERE status = 'running' " \
          "AND worker = %s"


class Store:
    """The queue's four statements on one connection; called on the store's single thread only."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite:///")
        if self.sqlite:
            import sqlite3

            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None,
                                             check_same_thread=False, timeout=20)
            # As Switchyard's settings open SQLite (settings/base.py).
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
        for statement in SCHEMA["sqlite" if self.sqlite else "postgres"]:
            self.conn.execute(statement)
        self.claim_sql = self._sql(CLAIM.format(lock="" if self.sqlite else " FOR UPDATE SKIP LOCKED"))

    def _sql(self, statement: str) -> str:
        return statement.replace("%s", "?") if self.sqlite else statement

    def _now(self) -> Any:
        now = datetime.now(UTC)
        return now.isoformat() if self.sqlite else now

    def _json(self, value: Any) -> Any:
        if self.sqlite:
            return orjson.dumps(value).decode()
        from psycopg.types.json import Jsonb

        return Jsonb(value)

    def insert(self, jobs: list[dict[str, Any]]) -> list[int]:
        """All of ``jobs`` in one transaction."""
        now, sql = self._now(), self._sql(INSERT)
        rows = [(str(job.get("task_name", "noop")), self._json(job.get("task_data") or {}),
                 int(job.get("priority_base", 0)), now) for job in jobs]
        if self.sqlite:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [self.conn.execute(sql, row).fetchone()[0] for row in rows]
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return ids
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(sql, rows, returning=True)
            ids = []
            while True:
                ids.append(cursor.fetchone()[0])
                if not cursor.nextset():
                    return ids

    def claim(self, worker: int) -> dict[str, Any] | None:
        row = self.conn.execute(self.claim_sql, (worker, self._now())).fetchone()
        if row is None:
            return None
        job_id, task_name, task_data, priority, attempts, created_at, started_at = row
        if self.sqlite:
            task_data = orjson.loads(task_data)
        else:
            created_at, started_at = created_at.isoformat(), started_at.isoformat()
        return {"id": job_id, "task_name": task_name, "task_data": task_data, "priority": priority,
                "priority_base": priority, "priority_adjustment": 0, "attempts": attempts,
                "created_at": created_at, "started_at": started_at}

    def complete(self, job_id: int, worker: int, result: str, output_data: Any) -> bool:
        cursor = self.conn.execute(self._sql(COMPLETE),
                                   (result, self._json(output_data), self._now(), job_id, worker))
        return bool(cursor.rowcount)

    def release(self, worker: int) -> None:
        self.conn.execute(self._sql(RELEASE), (worker,))


class Connection:
    """One worker socket: the jobs it runs, and at most one search for more at a time."""

    def __init__(self, queue: Queue, ws: ServerConnection, worker: int) -> None:
        self.queue, self.ws, self.worker = queue, ws, worker
        self.ready = False
        self.running: set[int] = set()
        self.searching: asyncio.Task[None] | None = None
        self.search_again = False

    def idle(self) -> bool:
        return self.ready and not self.running

    def offer(self) -> None:
        if not self.ready:
            return
        if self.searching is not None:
            self.search_again = True
            return
        self.searching = asyncio.get_running_loop().create_task(self._search())

    async def _search(self) -> None:
        try:
            while True:
                self.search_again = False
                if self.running:
                    return
                job = await self.queue.db(self.queue.store.claim, self.worker)
                if job is not None:
                    self.running.add(job["id"])
                    await self.ws.send(orjson.dumps({"type": "work_request_available", "work_request": job}),
                                       text=True)
                    return
                if not self.search_again:
                    return
        except ConnectionClosed:
            return
        finally:
            self.searching = None


class Queue:
    def __init__(self, store: Store) -> None:
        self.store = store
        # One thread, one connection: the database calls take turns, as Switchyard's do.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-queue-db")
        self.connections: set[Connection] = set()

    async def db(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)

    async def submit(self, jobs: list[dict[str, Any]]) -> list[int]:
        ids = await self.db(self.store.insert, jobs)
        for connection in list(self.connections):
            if connection.idle():
                connection.offer()
        return ids

    # --- worker sockets -------------------------------------------------------------------------

    async def worker_socket(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        key = ws.request.headers.get("Authorization", "").rsplit("-", 1)[-1]
        connection = Connection(self, ws, int(key) if key.isdigit() else 0)
        self.connections.add(connection)
        send = ws.send
        try:
            await send(orjson.dumps({"type": "connected", "worker": f"raw-{connection.worker}",
                                     "heartbeat_interval_s": 15.0, "lost_after_s": 60.0}), text=True)
            await send(b'{"type":"request_dynamic_metadata"}', text=True)
            async for data in ws:
                frame = orjson.loads(data)
                kind = frame.get("type")
                if kind == "metadata":
                    connection.ready = True
                    connection.offer()
                elif kind == "completed":
                    job_id = frame["work_request_id"]
                    await self.db(self.store.complete, job_id, connection.worker, frame["result"],
                                  frame.get("output_data"))
                    connection.running.discard(job_id)
                    connection.offer()
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(connection)
            if connection.searching is not None:
                with contextlib.suppress(Exception):
                    await connection.searching
            await self.db(self.store.release, connection.worker)

    # --- HTTP submissions -----------------------------------------------------------------------

    async def http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive, enough for the load generator's POSTs."""
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                               if k.strip().lower() == "content-length"), 0)
                body = await reader.readexactly(length)
                data = orjson.loads(body) if body else None
                if path == "/api/v1/work-requests/bulk" and isinstance(data, list):
                    ids = await self.submit(data)
                    status, answer = "201 Created", orjson.dumps([{"id": pk, "status": "pending"} for pk in ids])
                elif path == "/api/v1/work-requests" and isinstance(data, dict):
                    ids = await self.submit([data])
                    status, answer = "201 Created", orjson.dumps({"id": ids[0], "status": "pending"})
                else:
                    status, answer = "404 Not Found", b'{"detail":"not found"}'
                writer.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(answer)}\r\n\r\n".encode() + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main(url: str, host: str, port: int) -> None:
    queue = Queue(Store(url))
    http = await asyncio.start_server(queue.http, host, 0)
    async with serve(queue.worker_socket, host, port, compression=None, max_size=4 * 1024 * 1024) as server:
        print(f"{WS_READY}{next(iter(server.sockets)).getsockname()[1]}", flush=True)
        print(f"{READY}{http.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    try:
        uvloop.run(main(args.database_url, args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)
