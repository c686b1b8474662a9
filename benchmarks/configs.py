"""The server configurations a run compares, and how each is brought up fresh and torn down.

Every configuration gets a new server process (or two) and a new database, so no run inherits
another's rows, caches or sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from benchmarks import databases, servers
from benchmarks.servers import ServerProcess


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    raw: bool = False
    database: str = "sqlite"  # or "postgres"
    policy: str = "disabled"
    processes: int = 1

    @property
    def storing(self) -> bool:
        """Under a storing policy an acked message must never be lost."""
        return not self.raw and self.policy != "disabled"


RAW = Config("raw", "raw websockets relay", raw=True)
SQLITE = [Config(f"sqlite-{p}", f"switchyard sqlite {p}", policy=p) for p in ("disabled", "cache", "store")]
# PostgreSQL + Redis: the default policy (cache) on one process, and across two behind Redis; store on one.
POSTGRES = [
    Config("pg-redis-cache-1p", "switchyard pg+redis cache x1", database="postgres", policy="cache"),
    Config("pg-redis-cache-2p", "switchyard pg+redis cache x2", database="postgres", policy="cache", processes=2),
    # The durable path's slowest policy on PostgreSQL (a target of its own: benchmarks/targets.py).
    Config("pg-redis-store-1p", "switchyard pg+redis store x1", database="postgres", policy="store"),
]


def all_configs(with_postgres: bool) -> list[Config]:
    return [RAW, *SQLITE, *(POSTGRES if with_postgres else [])]


@dataclass
class Deployment:
    config: Config
    servers: list[ServerProcess]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    def alive(self) -> bool:
        return all(s.alive() for s in self.servers)


@contextmanager
def deploy(config: Config, topics: list[str], server_log: str = "quiet") -> Iterator[Deployment]:
    """Start ``config`` on a fresh database with ``topics`` created under its policy."""
    with ExitStack() as stack:
        if config.raw:
            procs = [servers.raw_relay()]
        else:
            fresh = databases.fresh_sqlite() if config.database == "sqlite" else databases.fresh_postgres()
            url = stack.enter_context(fresh)
            servers.provision(url, {slug: config.policy for slug in topics})
            redis = databases.REDIS_URL if config.database == "postgres" else None
            procs = [servers.switchyard(url, config.policy, redis, name=f"switchyard-{'AB'[i]}",
                                         server_log=server_log)
                     for i in range(config.processes)]
        for proc in procs:
            # Registered before start: a second process failing to start still stops the first.
            stack.callback(proc.stop)
            proc.start()
        yield Deployment(config, procs)
