"""The work benchmark load generator's clients (benchmarks/work_loadgen.py runs the phases with them):

- ``Http``: the submitter's POSTs on one kept-alive HTTP/1.1 connection;
- ``Database``: the requests' table read directly (autocommit, a fresh snapshot per read), to see
  when completions committed, and what a phase left pending withdrawn;
- ``Worker`` and ``Fleet``: worker sockets, plain ``websockets`` clients speaking the ``/ws/workers/``
  protocol as tests/work_worker.py does: ``metadata`` when asked, and for each
  ``work_request_available`` a ``started`` and a ``completed`` (success) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import websockets

POLL_S = 0.005
CONNECT_TIMEOUT_S = 30.0


class Http:
    """HTTP/1.1 POSTs on one kept-alive connection (enough for JSON answers with a length or chunked)."""

    def __init__(self, base: str, key: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.key = key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: Any) -> tuple[int, bytes]:
        data = orjson.dumps(body)
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Token {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
        )
        for attempt in (1, 2):
            if self.writer is None or self.reader is None or self.reader.at_eof():
                await self.close()
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request)
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                # The server closed the kept-alive connection as it sat idle (uvicorn: after 5 s) just as
                # this request went out: nothing of it was read. Once more on a new connection.
                await self.close()
                if attempt == 2 or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
        assert self.reader is not None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            answer = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            answer = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                answer += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
        else:
            answer = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class Database:
    """The requests' table: reads, each in a fresh snapshot, and withdrawing what a phase left pending."""

    def __init__(self, url: str, table: str) -> None:
        self.sqlite = url.startswith("sqlite:///")
        if self.sqlite:
            import sqlite3

            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=20)
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
        self.table = table
        self.mark = "?" if self.sqlite else "%s"

    def completed(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.table} WHERE status = 'completed'").fetchone()[0])

    def status(self, request_id: int) -> str | None:
        row = self.conn.execute(f"SELECT status FROM {self.table} WHERE id = {self.mark}", (request_id,)).fetchone()
        return None if row is None else str(row[0])

    def running(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.table} WHERE status = 'running'").fetchone()[0])

    def withdraw_pending(self) -> int:
        """Mark the requests still pending aborted, behind the server's back (no search takes an aborted
        request, and an assignment racing this fails its guard): a phase that ran out of time must not
        leave its work to the next one."""
        return int(self.conn.execute(f"UPDATE {self.table} SET status = 'aborted' WHERE status = 'pending'").rowcount)

    def close(self) -> None:
        self.conn.close()


class Worker:
    """One worker socket: reports its metadata when told to, runs every request it is given at once."""

    def __init__(self, fleet: Fleet, key: str) -> None:
        self.fleet, self.key = fleet, key
        self.asked = asyncio.Event()
        self.ws: Any = None
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        headers = {"Authorization": f"Token {self.key}"}
        async with websockets.connect(self.fleet.url, additional_headers=headers, compression=None,
                                      max_size=None, open_timeout=CONNECT_TIMEOUT_S) as ws:
            self.ws = ws
            beating: asyncio.Task[None] | None = None
            try:
                async for text in ws:
                    frame = orjson.loads(text)
                    kind = frame.get("type")
                    if kind == "work_request_available":
                        request_id = frame["work_request"]["id"]
                        self.fleet.assigned(request_id, time.perf_counter())
                        await ws.send(orjson.dumps({"type": "started", "work_request_id": request_id}), text=True)
                        await ws.send(orjson.dumps({"type": "completed", "work_request_id": request_id,
                                                    "result": "success"}), text=True)
                    elif kind == "request_dynamic_metadata":
                        self.asked.set()
                    elif kind == "connected":
                        beating = asyncio.get_running_loop().create_task(self.heartbeat(frame["heartbeat_interval_s"]))
                    else:
                        self.fleet.errors.append(frame)
            finally:
                if beating is not None:
                    beating.cancel()

    async def heartbeat(self, interval_s: float) -> None:
        """A worker that says nothing for WORKER_LOST_AFTER_S is lost: say it is there, as a real one does."""
        while True:
            await asyncio.sleep(interval_s)
            await self.ws.send(b'{"type":"heartbeat"}', text=True)

    async def report_metadata(self) -> None:
        await self.ws.send(b'{"type":"metadata","metadata":{}}', text=True)


class Fleet:
    def __init__(self, url: str) -> None:
        self.url = url
        self.workers: list[Worker] = []
        self.times: list[float] = []
        self.errors: list[dict[str, Any]] = []
        self.waiting: asyncio.Future[tuple[float, int]] | None = None

    def assigned(self, request_id: int, at: float) -> None:
        self.times.append(at)
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result((at, request_id))

    async def connect(self, keys: list[str]) -> None:
        """Open a socket per key; return once every one was asked for its metadata."""
        self.workers = [Worker(self, key) for key in keys]
        deadline = time.perf_counter() + CONNECT_TIMEOUT_S
        while not all(w.asked.is_set() for w in self.workers):
            for worker in self.workers:
                if worker.task.done():
                    worker.task.result()  # raises why it could not connect
                    raise RuntimeError("a worker socket closed before it was asked for its metadata")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{sum(not w.asked.is_set() for w in self.workers)} workers were not asked for "
                                   f"their metadata within {CONNECT_TIMEOUT_S} s")
            await asyncio.sleep(POLL_S)

    async def report_metadata(self) -> None:
        await asyncio.gather(*(w.report_metadata() for w in self.workers))

    async def close(self) -> None:
        for worker in self.workers:
            if worker.ws is not None:
                await worker.ws.close()
        await asyncio.gather(*(w.task for w in self.workers), return_exceptions=True)
        self.workers = []
