"""``/readyz``: whether this process can do its work, each dependency checked under a short timeout.

- **database**: a query on a table of ours (a database that was dropped, or a SQLite file that was
  removed, fails it; ``SELECT 1`` would not);
- **channel_layer**: a Redis PING when ``REDIS_URL`` is set (the backplane between processes),
  else the in-process layer, always there;
- **outbox:<target>**: each configured outbox target other than ``topic`` (which is the database):
  a connection to RabbitMQ (``AMQP_URL``) or a Redis PING (``OUTBOX_REDIS_URL``).

Each check has ``READINESS_TIMEOUT_S``; they run concurrently. A failed check names the exception
class only: a message could carry a URL with its password.

The database check holds a thread of the default pool while its query runs, and a hung database
holds it until the query returns. So at most one database check is in flight per process
(app/server/single_flight.py): a probe arriving meanwhile waits for that one, within its own
timeout, and is answered "check still running" when it does not end in time. The other checks are
coroutines, cancelled at their timeout, and run per probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse

from app.outbox.emit import configured_targets
from app.outbox.targets import rabbitmq, redis_streams
from app.server.single_flight import SingleFlight

Check = Callable[[], Awaitable[None]]


def _query_database() -> None:
    """On a thread of its own with a connection of its own, closed after: a hung database holds
    this thread, never the shared one the ORM uses."""
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1 FROM django_migrations LIMIT 1")
            cursor.fetchone()
    finally:
        connections.close_all()


async def _database_query() -> None:
    await asyncio.to_thread(_query_database)


check_database = SingleFlight(_database_query)


async def check_channel_layer() -> None:
    if settings.REDIS_URL:
        await redis_streams.ping(settings.REDIS_URL, settings.READINESS_TIMEOUT_S)


async def check_rabbitmq() -> None:
    assert settings.AMQP_URL
    await rabbitmq.ping(settings.AMQP_URL, settings.READINESS_TIMEOUT_S)


async def check_outbox_redis() -> None:
    assert settings.OUTBOX_REDIS_URL
    await redis_streams.ping(settings.OUTBOX_REDIS_URL, settings.READINESS_TIMEOUT_S)


def checks() -> dict[str, Check]:
    found: dict[str, Check] = {"database": check_database, "channel_layer": check_channel_layer}
    targets = configured_targets()
    if "rabbitmq" in targets:
        found["outbox:rabbitmq"] = check_rabbitmq
    if "redis" in targets:
        found["outbox:redis"] = check_outbox_redis
    return found


async def _outcome(check: Check) -> str:
    joined = isinstance(check, SingleFlight) and check.in_flight()
    try:
        async with asyncio.timeout(settings.READINESS_TIMEOUT_S):
            await check()
    except TimeoutError:
        if joined:
            return (f"unreachable: check still running (started by an earlier probe; no answer within "
                    f"{settings.READINESS_TIMEOUT_S} s)")
        return f"unreachable: no answer within {settings.READINESS_TIMEOUT_S} s"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 with every check "ok"; 503 naming the unreachable ones."""
    named = checks()
    outcomes = await asyncio.gather(*(_outcome(check) for check in named.values()))
    results = dict(zip(named, outcomes, strict=True))
    failed = sorted(name for name, outcome in results.items() if outcome != "ok")
    body = {"status": "unavailable" if failed else "ok", "checks": results, "unreachable": failed}
    return JsonResponse(body, status=503 if failed else 200)
