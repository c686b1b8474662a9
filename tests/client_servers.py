"""A server the client SDK's fault tests kill, stop and restart (on a database of its own), and what they
make on it."""

from __future__ import annotations

import signal
from pathlib import Path

from switchyard_client import Client
from tests.protocol import unique
from tests.servers import ServerProcess, manage, migrated_database_url, start_server


def own_server(directory: Path, **env_extra: str) -> ServerProcess:
    """A server on a database of its own with short subscription leases: a restarted server refuses its
    old subscriptions' leases until they expire."""
    return start_server(migrated_database_url(directory, "own"), SUBSCRIPTION_LEASE_S="1", **env_extra)


def running(server: ServerProcess) -> ServerProcess:
    """``server`` serving again: a test that failed mid-outage may have left it stopped or down."""
    if server.running:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGCONT)
    else:
        server.restart()
    return server


def stored_topic(server: ServerProcess, prefix: str = "faults") -> str:
    """A new public topic with Pulsar semantics that stores every message."""
    slug = unique(prefix)
    manage(server.database_url, "dasf_topic", slug, "--new", "--anonymous", "--no-dasf", "--store-messages", "store")
    return slug


def fast(server: ServerProcess, **options: float) -> Client:
    """A client that reconnects within half a second."""
    return Client(server.http, backoff_initial_s=0.05, backoff_maximum_s=0.5, **options)
