"""A server the client SDK's fault tests kill, stop and restart (on a database of its own), and what they
make on it."""

from __future__ import annotations

import signal
from pathlib import Path

from switchyard_client import Client
from tests.protocol import unique
from tests.servers import ServerProcess, manage_many, migrated_database_url, server_env, start_server


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


class StoredTopics:
    """New public topics with Pulsar semantics that store every message, made ``batch`` at a time in one
    process: a process for each would cost a Python and Django start-up for each test."""

    def __init__(self, server: ServerProcess, batch: int = 8, prefix: str = "faults") -> None:
        self.server, self.batch, self.prefix = server, batch, prefix
        self.made: list[str] = []

    def new(self) -> str:
        """A topic no test has used."""
        if not self.made:
            slugs = [unique(self.prefix) for _ in range(self.batch)]
            manage_many(server_env(self.server.database_url),
                        *(("dasf_topic", slug, "--new", "--anonymous", "--no-dasf", "--store-messages", "store")
                          for slug in slugs))
            self.made = slugs
        return self.made.pop(0)


def fast(server: ServerProcess, **options: float) -> Client:
    """A client that reconnects within half a second."""
    return Client(server.http, backoff_initial_s=0.05, backoff_maximum_s=0.5, **options)
