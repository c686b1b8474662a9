"""Stopping and starting the machine's own PostgreSQL, Redis and RabbitMQ (always brought back up)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

REDIS_PORT = 6379
POSTGRES_PORT = 5432
AMQP_PORT = 5672
SERVICE_TIMEOUT_S = 60.0
# The ports of the services this process stopped and has not started again: services_up() restarts
# only these, so a machine without one of the services (its tests skip) is not made to start it.
STOPPED: set[int] = set()

REDIS_START = ("redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(REDIS_PORT),
               "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log")
REDIS_STOP = ("redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), "shutdown", "nosave")


def _pg_ctl(action: str, *extra: str) -> tuple[str, ...]:
    (version,) = os.listdir("/etc/postgresql")
    return ("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *extra)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def wait_port(port: int, *, open_: bool) -> None:
    deadline = time.monotonic() + SERVICE_TIMEOUT_S
    while port_open(port) != open_:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"port {port} did not {'open' if open_ else 'close'} in {SERVICE_TIMEOUT_S} s")
        await asyncio.sleep(0.1)  # bounded-poll


async def run(command: tuple[str, ...], check: bool = True) -> None:
    proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SERVICE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {out.decode(errors='replace')}")


async def stop_redis() -> None:
    STOPPED.add(REDIS_PORT)
    await run(REDIS_STOP, check=False)  # the server may drop the connection before it answers
    await wait_port(REDIS_PORT, open_=False)


async def start_redis() -> None:
    if not port_open(REDIS_PORT):
        await run(REDIS_START)
    await wait_port(REDIS_PORT, open_=True)
    STOPPED.discard(REDIS_PORT)


async def stop_postgres() -> None:
    STOPPED.add(POSTGRES_PORT)
    await run(_pg_ctl("stop", "-m", "fast"))
    await wait_port(POSTGRES_PORT, open_=False)


async def start_postgres() -> None:
    if not port_open(POSTGRES_PORT):
        await run(_pg_ctl("start"))
    await wait_port(POSTGRES_PORT, open_=True)
    STOPPED.discard(POSTGRES_PORT)


async def stop_rabbitmq() -> None:
    """The broker application stops (the Erlang node stays: start_app is quick)."""
    STOPPED.add(AMQP_PORT)
    await run(("rabbitmqctl", "stop_app"))
    await wait_port(AMQP_PORT, open_=False)


async def start_rabbitmq() -> None:
    await run(("rabbitmqctl", "start_app"))
    await wait_port(AMQP_PORT, open_=True)
    STOPPED.discard(AMQP_PORT)


@asynccontextmanager
async def redis_down() -> AsyncIterator[None]:
    """Redis is stopped inside the block and running again (port open) after it, whatever happened."""
    try:
        await stop_redis()
        yield
    finally:
        await start_redis()


@asynccontextmanager
async def postgres_down() -> AsyncIterator[None]:
    """PostgreSQL is stopped inside the block and running again (port open) after it, whatever happened."""
    try:
        await stop_postgres()
        yield
    finally:
        await start_postgres()


@asynccontextmanager
async def rabbitmq_down() -> AsyncIterator[None]:
    """RabbitMQ's application is stopped inside the block and running again after it, whatever happened."""
    try:
        await stop_rabbitmq()
        yield
    finally:
        await start_rabbitmq()


def _start_command(port: int) -> tuple[str, ...]:
    if port == REDIS_PORT:
        return REDIS_START
    if port == POSTGRES_PORT:
        return _pg_ctl("start")
    return ("rabbitmqctl", "start_app")


def services_up() -> None:
    """Last line of defence: a run that died mid-fault must not leave a service it stopped down."""
    for port in sorted(STOPPED):
        if port_open(port):
            STOPPED.discard(port)
            continue
        start = _start_command(port)
        subprocess.run(start, check=False, timeout=SERVICE_TIMEOUT_S, capture_output=True)
        deadline = time.monotonic() + SERVICE_TIMEOUT_S
        while not port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)  # bounded-poll
        if port_open(port):
            STOPPED.discard(port)
