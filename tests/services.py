"""Real services for integration tests: skipped with a reason when absent, failed under CI=true."""

from __future__ import annotations

import os
import socket

import pytest

REDIS_URL = os.environ.get("SWITCHYARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("SWITCHYARD_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true requires it (.ci/run starts it)")
    pytest.skip(reason)


def require_redis() -> str:
    require("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def require_postgres() -> str:
    require("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


AMQP_URL = os.environ.get("SWITCHYARD_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def require_rabbitmq() -> str:
    require("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


async def drop_cqrs_layout(url: str, queue: str, exchange: str) -> None:
    """Delete a test's CQRS replica queue, its dead letter queue ``dead_letter_<queue>`` and its exchange:
    RabbitMQ keeps durable ones after the test."""
    import aio_pika

    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for name in (queue, f"dead_letter_{queue}"):
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)
