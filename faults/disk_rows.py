"""Disk rows: the disk under the server's SQLite file (database, WAL and all) fills up under a storing
topic's traffic. Publishes must then be refused with error acks, not acknowledged and dropped; the
server must stay up, take publishes again once space returns, deliver everything it acknowledged,
and leave a database that passes ``PRAGMA integrity_check``."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from faults.row import Counts, Row
from faults.scenario import Profile, Scenario
from tests.api_client import call
from tests.cluster import new_token, new_topic
from tests.protocol import b64, connect, recv_json, send_json, subscribe, unique
from tests.servers import ServerProcess, manage_many, migrated_database_url, server_env, start_server
from tests.worker_processes import until

PAYLOAD_BYTES = 4096
# The room the tmpfs leaves above what is in use when it is shrunk: a few dozen messages.
HEADROOM_BYTES = 256 * 1024
ROOMY = "64m"
# Error acks in a row that show the disk is full (not a passing hiccup).
REFUSALS_IN_A_ROW = 20
RECONNECTS = 300
PERIODIC = {"GC_INTERVAL_S": "0.5", "WORKER_CHECK_INTERVAL_S": "0.5", "OUTBOX_RELAY_TASKS": "1"}


def used_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def tmpfs(directory: Path) -> Iterator[Path]:
    """A roomy tmpfs at ``directory``, unmounted on leaving whatever happened."""
    directory.mkdir()
    try:
        mount("-t", "tmpfs", "-o", f"size={ROOMY}", "tmpfs", str(directory))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        reason = f"cannot mount a tmpfs (needs root): {getattr(exc, 'stderr', '') or exc}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and CI=true requires it")
        pytest.skip(reason)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True, timeout=30)


def resize(directory: Path, size: str) -> None:
    mount("-o", f"remount,size={size}", str(directory))


class Traffic:
    """One producer publishing sequentially (a fresh socket if the server closed its own) and what its
    acks said, and one consumer acknowledging what it gets."""

    def __init__(self, server: ServerProcess, slug: str) -> None:
        self.url = server.ws + slug
        self.server, self.slug = server, slug
        self.acked: list[str] = []
        self.refusals: list[str] = []
        self.refused_ids: list[str] = []
        self.arrivals: list[str] = []
        self.refused_in_a_row = 0
        self.reconnects = 0
        self.consumer_reconnects = 0
        self.sub = unique("sub")
        self.publishing = True
        self.sent = 0

    async def produce(self) -> None:
        producer = await connect(self.url)
        try:
            while self.publishing:
                self.sent += 1
                frame = {"payload": b64({"n": self.sent, "pad": "x" * PAYLOAD_BYTES}), "properties": {},
                         "context": self.sent}
                try:
                    await send_json(producer, frame)
                    ack = await recv_json(producer)
                except websockets.ConnectionClosed:
                    self.reconnects += 1
                    producer = await connect(self.url)
                    continue
                if ack.get("result") == "ok":
                    self.acked.append(ack["messageId"])
                    self.refused_in_a_row = 0
                elif "error" in str(ack.get("result")):
                    self.refusals.append(str(ack["result"]))
                    self.refused_ids.append(str(ack.get("messageId")))
                    self.refused_in_a_row += 1
                else:
                    raise AssertionError(f"an ack neither ok nor an error: {ack}")
        finally:
            await producer.close()

    async def consume(self, consumer: ClientConnection) -> None:
        """Acknowledge what arrives; a connection the server closed (a catch-up that failed on the
        full disk) is opened again on the same subscription, which replays what was not acked."""
        while True:
            try:
                frame = await recv_json(consumer, timeout=3600)
                if frame.get("properties", {}).get("messageType") != "api_info":  # the topic's probe
                    self.arrivals.append(frame["messageId"])
                await send_json(consumer, {"messageId": frame["messageId"]})
            except websockets.ConnectionClosed:
                self.consumer_reconnects += 1
                consumer = await self.reconnect()

    async def reconnect(self) -> ClientConnection:
        for _ in range(RECONNECTS):
            try:
                return await connect(f"{self.server.ws}{self.slug}/{self.sub}")
            except (websockets.InvalidStatus, OSError):
                await asyncio.sleep(0.1)  # bounded-poll: refused while the disk is full
        raise AssertionError(f"the consumer could not reconnect in {RECONNECTS} attempts")


async def newcomer(server: ServerProcess, slug: str) -> str:
    """What a consumer subscribing anew meets on the full disk (a new subscription is a row to write)."""
    try:
        ws = await connect(f"{server.ws}{slug}/{unique('late')}")
    except websockets.InvalidStatus as exc:
        return f"handshake refused with {exc.response.status_code}"
    try:
        frame = await recv_json(ws, timeout=5)
        return f"subscribed, first frame has {sorted(frame)[:4]}"
    except TimeoutError:
        return "subscribed, nothing within 5 s"
    except websockets.ConnectionClosed as closed:
        return f"closed with {closed.rcvd.code if closed.rcvd else 1006}"
    finally:
        await ws.close()


def submit_noop(server: ServerProcess, key: str) -> int:
    """The status of a work request's submission."""
    return call(server, "/work-requests", "POST", key, {"task_name": "noop", "task_data": {}})[0]


def integrity(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall())


def stored_ids(path: Path) -> set[str]:
    """The messageIds in the database (Django keeps a UUID as 32 hex digits in SQLite)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return {str(uuid.UUID(row[0])) for row in db.execute("SELECT message_id FROM broker_message")}


async def disk_full(profile: Profile) -> Row:
    notes: list[str] = []
    with tmpfs(profile.workdir / "tmpfs") as directory:
        database_url = migrated_database_url(directory, "disk", backend="sqlite")
        path = Path(database_url.removeprefix("sqlite:///"))
        slug = unique("disk")
        # store, not cache: a cache topic whose consumer keeps up reaches a steady size (acked rows'
        # pages and the WAL are reused), so a disk that held the warm-up might never fill.
        _, admin = manage_many(server_env(database_url),
                               new_topic(slug, "--public", "--anonymous", "--store-messages", "store"),
                               new_token(unique("admin"), "--superuser"))
        # The periodic loops on (often), as in production: their writes meet the full disk too.
        server = start_server(database_url, **PERIODIC)
        traffic = Traffic(server, slug)
        tasks: list[asyncio.Task[None]] = []
        try:
            # Subscribed before the first publish: its first frame is the topic's probe.
            consumer = await subscribe(server.ws, slug, traffic.sub)
            tasks = [asyncio.create_task(traffic.consume(consumer)), asyncio.create_task(traffic.produce())]
            warm = profile.size(50, 200)
            await until(lambda: len(traffic.acked) >= warm or any(t.done() for t in tasks), "the first publishes")
            room = used_bytes(directory) + HEADROOM_BYTES
            resize(directory, str(room))
            notes.append(f"tmpfs shrunk to {room // 1024} KiB ({os.stat(path).st_size // 1024} KiB database) "
                         f"after {len(traffic.acked)} acks")
            await until(lambda: traffic.refused_in_a_row >= REFUSALS_IN_A_ROW or any(t.done() for t in tasks),
                       "publishes to be refused on the full disk")
            if not server.running:
                raise AssertionError("the server died on the full disk")
            notes.append(f"a consumer subscribing on the full disk: {await newcomer(server, slug)}")
            # A write over HTTP (a work request) meets the full disk too: refused, the server stays up.
            notes.append(f"POST /work-requests on the full disk: {await asyncio.to_thread(submit_noop, server, admin)}")
            full = profile.size(50, 500)
            await until(lambda: traffic.refused_in_a_row >= full or any(t.done() for t in tasks),
                       "refusals while the disk stays full")
            refused_at = len(traffic.acked)
            resize(directory, ROOMY)
            grown_at = time.monotonic()
            await until(lambda: len(traffic.acked) > refused_at or any(t.done() for t in tasks),
                       "a publish to succeed after the disk grew")
            recovery_s = time.monotonic() - grown_at
            notes.append(f"POST /work-requests once it grew: {await asyncio.to_thread(submit_noop, server, admin)}")
            after = len(traffic.acked) + profile.size(50, 200)
            await until(lambda: len(traffic.acked) >= after or any(t.done() for t in tasks), "publishes after")
            traffic.publishing = False
            await tasks[1]
            if not server.running:
                raise AssertionError("the server died after the disk grew")
            await until(lambda: set(traffic.acked) <= set(traffic.arrivals) or tasks[0].done(),
                       "every acknowledged message delivered")
            for task in tasks:
                if task.done():
                    task.result()  # a traffic task that died: its exception is the row's
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.stop()
        notes.append(f"{len(set(traffic.refusals))} kinds of refusal, e.g. {traffic.refusals[:1]}")
        notes.append(f"reconnects: producer {traffic.reconnects}, consumer {traffic.consumer_reconnects}")
        checked = integrity(path)
        notes.append(f"integrity_check: {checked}")
        if checked != "ok":
            raise AssertionError(f"the database is damaged: {checked}")
        # The topic keeps everything (store): an acked message is delivered only if it is still in
        # the database once the server stopped, not merely sent on from memory.
        stored = stored_ids(path)
        kept = [message_id for message_id in traffic.arrivals if message_id in stored]
        notes.append(f"delivered but not in the database: {len(set(traffic.arrivals) - stored)}; "
                     f"refused but stored anyway: {len(set(traffic.refused_ids) & stored)}")
    return Row("disk full under SQLite", "sqlite", messages=Counts.of(traffic.acked, kept),
               recovery_s=recovery_s, refused=len(traffic.refusals), notes=notes)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("disk full under SQLite", "sqlite", disk_full,
             expected_errors=()),
)
