"""W4: many idle consumer sockets on one server process: how fast they connect, what each costs.

Sockets open in batches, ``concurrency`` handshakes in flight. After each batch the load generator
waits until the server is idle again, because Switchyard accepts a socket first and attaches the
consumer (topic, rights, replay query) just after: a server that is still attaching has not paid
for its sockets yet. Two rates come out: handshakes per second of handshaking, and sockets per
second until the server was done with them ("settled"). The deadline is checked between and
inside batches, so a slow server reports how many it took in the time, settled.

Server memory is VmRSS before the first socket and once the server is idle with all of them
open; after they are closed it is read once more (what is not given back shows up there).
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection

from benchmarks import wire
from benchmarks.procstat import rss_kib, wait_until_idle
from benchmarks.stats import rate

BATCH = 1000
# The longest wait for a server to go idle after a batch, and before the first one.
SETTLE_S = 10.0


def raise_open_file_limit() -> int:
    """Every socket is a file descriptor; the soft limit (often 1024) would stop us early."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def run_connections(
    *,
    consumer_base: str,
    topic: str,
    count: int,
    concurrency: int,
    deadline_s: float,
    server_pid: int,
) -> dict[str, Any]:
    limit = raise_open_file_limit()
    started = time.monotonic()
    deadline = started + deadline_s
    run = uuid.uuid4().hex[:12]
    # Room for stdio and the like: never ask for more descriptors than we may have.
    count = min(count, limit - 100)
    result: dict[str, Any] = {"requested": count, "concurrency": concurrency, "batch": BATCH}
    await wait_until_idle(server_pid, time.monotonic() + SETTLE_S)
    rss_before = rss_kib(server_pid)
    sockets: list[ClientConnection] = []
    failures: list[str] = []
    handshaking_s = settling_s = 0.0
    settled_all = True

    async def opener(indexes: list[int]) -> None:
        while indexes and time.monotonic() < deadline:
            index = indexes.pop()
            try:
                url = wire.consumer_url(consumer_base, topic, f"idle-{run}-{index}")
                sockets.append(await wire.open_socket(url))
            except Exception as exc:  # refused, reset, timed out, rejected: counted, not fatal
                failures.append(f"{type(exc).__name__}: {exc}"[:200])

    try:
        for first in range(0, count, BATCH):
            if time.monotonic() >= deadline:
                break
            indexes = list(range(first, min(count, first + BATCH)))
            t0 = time.monotonic()
            await asyncio.gather(*(opener(indexes) for _ in range(min(concurrency, len(indexes)))))
            t1 = time.monotonic()
            idle_at = await wait_until_idle(server_pid, t1 + SETTLE_S)
            settled_all = settled_all and idle_at < t1 + SETTLE_S
            handshaking_s += t1 - t0
            settling_s += max(idle_at, t1) - t0
        rss_after = rss_kib(server_pid)
        opened = len(sockets)
        result.update({
            "connections": opened,
            # The server may close some right after accepting them (a refused consumer).
            "still_open": sum(1 for ws in sockets if ws.close_code is None),
            "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "connect_rate": rate(opened, handshaking_s),
            "settled_rate": rate(opened, settling_s),
            "settled": settled_all,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_per_conn_kib": round((rss_after - rss_before) / opened, 2) if opened else None,
            "complete": opened == count,
        })
    finally:
        # Abort (RST) rather than a closing handshake each: the point is the server's cost while
        # they are open, and 10,000 graceful closes would take longer than the measurement.
        for ws in sockets:
            ws.transport.abort()
    await wait_until_idle(server_pid, time.monotonic() + SETTLE_S)
    result["rss_after_close_kib"] = rss_kib(server_pid)
    result["elapsed_s"] = round(time.monotonic() - started, 2)
    return result
