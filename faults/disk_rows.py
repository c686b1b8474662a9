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

from faults.row import Counts, Row
from faults.scenario import Profile, Scenario
from faults.traffic import ConsumerProcess, Ledger, Producer, expect, until
from tests.api_client import call
from tests.cluster import new_token, new_topic
from tests.protocol import connect, recv_json, unique
from tests.servers import ServerProcess, manage_many, migrated_database_url, server_env, start_server

PAYLOAD_BYTES = 4096
# The room the tmpfs leaves above what is in use when it is shrunk: a few dozen messages.
HEADROOM_BYTES = 256 * 1024
ROOMY = "64m"
# Error acks that show the disk is full (not a passing hiccup) before the row looks further.
REFUSALS = 20
RATE_PER_S = 200.0
PHASE_S = 30.0
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
        ledger = Ledger()
        producer = Producer([server.ws + slug], ledger, rate_per_s=RATE_PER_S, padding_bytes=PAYLOAD_BYTES)
        consumer = ConsumerProcess([f"{server.ws}{slug}/{unique('sub')}"], ledger)
        producing: asyncio.Task[None] | None = None
        try:
            await consumer.start()  # subscribed before the first publish
            producing = asyncio.create_task(producer.run())
            first = profile.size(50, 200)
            await expect(lambda: len(ledger.acked) >= first or producing.done(), PHASE_S, "the first publishes")
            room = used_bytes(directory) + HEADROOM_BYTES
            resize(directory, str(room))
            notes.append(f"tmpfs shrunk to {room // 1024} KiB ({os.stat(path).st_size // 1024} KiB database) "
                         f"after {len(ledger.acked)} acks")
            await expect(lambda: ledger.refused >= REFUSALS or producing.done(), PHASE_S, "refusals on the full disk")
            if not server.running:
                raise AssertionError("the server died on the full disk")
            met = await newcomer(server, slug)
            # A replay it cannot record is "try again later" (1013), not the server failing (1011).
            if met.startswith("closed with") and met != "closed with 1013":
                raise AssertionError(f"a consumer subscribing on the full disk was {met}, not 1013")
            notes.append(f"a consumer subscribing on the full disk: {met}")
            # A write over HTTP (a work request) meets the full disk too: refused, the server stays up.
            status = await asyncio.to_thread(submit_noop, server, admin)
            if status != 503:
                raise AssertionError(f"POST /work-requests on the full disk answered {status}, not 503")
            if not any("disk is full" in line and "WARNING" in line for line in server.output):
                raise AssertionError("the server did not log the full disk as a WARNING: the refusals have "
                                     "another cause")
            full = ledger.refused + profile.size(50, 500)
            await expect(lambda: ledger.refused >= full or producing.done(), PHASE_S,
                         "refusals while the disk stays full")
            resize(directory, ROOMY)
            grown_at = time.monotonic()
            after = profile.size(50, 200)
            await expect(lambda: ledger.acked_since(grown_at) >= after or producing.done(), PHASE_S,
                         "publishes once it grew")
            status = await asyncio.to_thread(submit_noop, server, admin)
            if status != 201:
                raise AssertionError(f"POST /work-requests once the disk grew answered {status}, not 201")
            notes.append("POST /work-requests: 503 on the full disk, 201 once it grew")
            producer.stopping.set()
            await producing
            if not server.running:
                raise AssertionError("the server died after the disk grew")
            await until(lambda: not ledger.missing(), PHASE_S)  # what is still missing then counts as lost
        finally:
            producer.stopping.set()
            if producing is not None and not producing.done():
                producing.cancel()
            if consumer.proc is not None:
                await consumer.stop()
            server.stop()
        notes.append(f"refusals, e.g. {ledger.refusals[:1]}; producer connections {producer.connections}, "
                     f"consumer's {consumer.connections}")
        checked = integrity(path)
        notes.append(f"integrity_check: {checked}")
        if checked != "ok":
            raise AssertionError(f"the database is damaged: {checked}")
        # The topic keeps everything (store): an acked message is delivered only if it is still in
        # the database once the server stopped, not merely sent on from memory.
        stored = stored_ids(path)
        arrivals = [message_id for message_id, _ in ledger.arrivals]
        notes.append(f"acked but not in the database: {len(ledger.acked.keys() - stored)}")
    return Row("disk full under SQLite", "sqlite",
               messages=Counts.of(ledger.acked, [message_id for message_id in arrivals if message_id in stored]),
               recovery_s=ledger.recovery_after(grown_at), refused=ledger.refused, notes=notes)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("disk full under SQLite", "sqlite", disk_full),
)
