"""With two server processes on one database only one runs the ping relay, and the other takes
over within one interval when the leader dies."""

from __future__ import annotations

import os
import time

import pytest
from django.utils import timezone

from app.broker.models import Topic
from app.leases.models import Lease
from tests.protocol import eventually, make_topic
from tests.servers import start_server

INTERVAL_S = 1.0


@pytest.fixture
def two_servers():
    env = {"PING_INTERVAL_S": str(INTERVAL_S), "GC_INTERVAL_S": "0"}
    servers = [start_server(os.environ["DATABASE_URL"], **env) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def holder() -> str | None:
    lease = Lease.objects.filter(name="ping").first()
    return lease.holder if lease and lease.expires_at > timezone.now() else None


async def test_one_leader_pings(two_servers):
    """Exactly one of the two processes holds the ping lease, and topics get pinged."""
    slug = make_topic()
    await eventually(lambda: holder() is not None, message="a ping leader")
    pids = {str(s.proc.pid) for s in two_servers}
    assert holder().rsplit(":", 1)[1] in pids
    await eventually(lambda: Topic.objects.get(slug=slug).last_ping is not None, message="a ping")


async def test_survivor_takes_over(two_servers):
    """When the leader is killed, the other process leads and pings within one interval."""
    await eventually(lambda: holder() is not None, message="a ping leader")
    leader_pid = holder().rsplit(":", 1)[1]
    leader = next(s for s in two_servers if str(s.proc.pid) == leader_pid)
    survivor = next(s for s in two_servers if s is not leader)
    leader.kill()
    killed_at = time.monotonic()
    slug = make_topic()
    await eventually(lambda: (holder() or "").endswith(f":{survivor.proc.pid}"), timeout=5 * INTERVAL_S,
                     message="the survivor to take the lease")
    await eventually(lambda: Topic.objects.get(slug=slug).last_ping is not None, timeout=5 * INTERVAL_S,
                     message="a ping from the survivor")
    # The lease lives 0.6 interval and is retried every 0.2: one interval, plus slack for a loaded machine.
    assert time.monotonic() - killed_at < 2 * INTERVAL_S + 1.0
