"""Two (or more) real server processes behind one Redis and one PostgreSQL database."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.protocol import unique
from tests.servers import ROOT, ServerProcess, manage_many, migrated_database_url, server_env, start_server
from tests.services import require_postgres, require_redis


def new_topic(slug: str, *args: str) -> tuple[str, ...]:
    """The command creating topic ``slug`` (``dasf_topic`` options ``args``)."""
    return ("dasf_topic", slug, "--new", *args)


def new_token(username: str, *extra: str) -> tuple[str, ...]:
    """The command creating a token (printed) for ``username``, created if new."""
    return ("createtoken", username, "--create-user", *extra)


@dataclass
class Cluster:
    database_url: str
    redis_url: str
    env: dict[str, str]
    servers: list[ServerProcess] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        """Run a management command against the cluster's database; its stdout."""
        env = server_env(self.database_url, REDIS_URL=self.redis_url)
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True, timeout=120)
        return done.stdout

    def manage_many(self, *commands: tuple[str, ...]) -> list[str]:
        """Run management commands in one process against the cluster's database; their stdouts."""
        return manage_many(server_env(self.database_url, REDIS_URL=self.redis_url), *commands)

    def topic(self, *args: str) -> str:
        slug = unique()
        self.manage(*new_topic(slug, *args))
        return slug

    def token(self, username: str, *extra: str) -> str:
        return self.manage(*new_token(username, *extra)).strip()

    def create_worker(self) -> str:
        """Register a worker of a unique name; its key."""
        return self.manage("createworker", unique("w")).strip()

    def python(self, code: str) -> str:
        """Run ``code`` in ``manage.py shell`` on the cluster's database (no server: nobody is told)."""
        return self.manage("shell", "--no-imports", "-v", "0", "-c", code).strip()

    def submit(self, *requests: tuple[str, dict[str, object], list[int]]) -> list[int]:
        """Submit work requests (task, task data, dependency indexes into ``requests``) in order; their ids."""
        code = (
            "from app.work.submission import submit\n"
            "ids = []\n"
            f"for task, data, parents in {json.dumps(requests)}:\n"
            "    ids.append(submit(task, data, dependencies=[ids[i] for i in parents]).pk)\n"
            "print(*ids)"
        )
        return [int(pk) for pk in self.python(code).split()]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextmanager
def pg_redis_cluster(tmp: Path, **env: str) -> Iterator[Cluster]:
    """A cluster on PostgreSQL + Redis (skipped, or failed under CI=true, when either is absent),
    stopped on leaving."""
    require_postgres()
    cluster = start_cluster(tmp, require_redis(), 2, **env)
    try:
        yield cluster
    finally:
        cluster.stop()


def start_cluster(tmp: Path, redis_url: str, size: int = 2, **env: str) -> Cluster:
    database_url = migrated_database_url(tmp, "cluster", backend="postgres")
    cluster = Cluster(database_url, redis_url, {"REDIS_URL": redis_url, **env})
    cluster.servers = [start_server(database_url, **cluster.env) for _ in range(size)]
    return cluster


def http_json(url: str, method: str = "GET", body: object | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
