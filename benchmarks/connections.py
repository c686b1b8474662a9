"""W4: many idle consumer sockets on one server process: how fast they connect, what each costs.

Sockets open ``concurrency`` at a time. The connect rate counts completed handshakes; the settled
rate also waits until the server is idle again, because Switchyard accepts first and attaches the
consumer (topic, rights, replay query) just after. Server memory is VmRSS before the first socket
and once the server is idle with all of them open; after they are closed it is read once more
(what is not given back shows up there).
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

SETTLE_S = 15.0


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
    # Room for the other workloads' sockets and stdio: never ask for more descriptors than exist.
    count = min(count, limit - 100)
    result: dict[str, Any] = {"requested": count, "concurrency": concurrency}
    await wait_until_idle(server_pid, time.monotonic() + SETTLE_S)
    rss_before = rss_kib(server_pid)
    sockets: list[ClientConnection] = []
    failures: list[str] = []
    next_index = 0

    async def opener() -> None:
        nonlocal next_index
        while next_index < count and time.monotonic() < deadline:
            index, next_index = next_index, next_index + 1
            try:
                sockets.append(await wire.open_socket(wire.consumer_url(consumer_base, topic,
                                                                        f"idle-{run}-{index}")))
            except Exception as exc:  # refused, reset, timed out, handshake rejected: counted, not fatal
                failures.append(f"{type(exc).__name__}: {exc}"[:200])

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(opener() for _ in range(concurrency)))
        handshakes_done = time.monotonic()
        settled = await wait_until_idle(server_pid, min(deadline, handshakes_done) + SETTLE_S)
        rss_after = rss_kib(server_pid)
        # The server may have closed some right after accepting them (refused consumer).
        still_open = sum(1 for ws in sockets if ws.close_code is None)
        opened = len(sockets)
        result.update({
            "connections": opened,
            "still_open": still_open,
            "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "connect_rate": rate(opened, handshakes_done - t0),
            "settled_rate": rate(opened, max(settled, handshakes_done) - t0),
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
