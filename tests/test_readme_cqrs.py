"""The README's CQRS master/replica example runs as written: a save on the master reaches the replica.

Everything is read from README.md (nothing of it is copied here): the python block at the top of "CQRS
replication", split at its two classes, each into the `<app>/models.py` its `# ... service:` comment
names, with the imports the note after the examples names and those of the models file in "Your own
apps"; the app layout and `makemigrations` command of "Your own apps"; and the two `make serve` commands
of the bash block, with their environment. What differs, and why: a free port (`PORT=0`, read back from
`SWITCHYARD_READY`) for 8000/8001; a queue and exchange of this test's own for `crm` and the default
exchange (parallel runs share the broker); the session's RabbitMQ for the README's URL; the databases,
static files and apps (`PYTHONPATH`, `$PWD` in "Your own apps") in the test's directory; and `make -o
install serve`, which runs the serve target's commands (migrate, collectstatic, serve) without its install
step: the test session's `.venv` has everything, `make serve` reinstalls whenever pyproject.toml is newer
than its stamp (a fresh checkout's is), and a worktree's `.venv` is another checkout's, which a reinstall
would repoint at this one.
The servers' logs are checked for ERRORs by tests/server_log.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.protocol import eventually, unique
from tests.servers import ROOT, ServerProcess, group_members
from tests.services import drop_cqrs_layout, require_rabbitmq
from tests.test_readme import README, fenced_blocks, new_users_env

SECTION = "## CQRS replication (django-cqrs compatible)"
APPS_SECTION = "## Your own apps"
MAX_EXAMPLE_LINES = 20  # the bound on the example: both blocks and the note, fences included
# A class of the python block: `class Author(MasterMixin):   # master service: shop/models.py`.
_CLASS = re.compile(r"^class (?P<name>\w+)\(.*#\s*(?P<role>\w+) service: (?P<app>\w+)/models\.py\s*$", re.M)
SERVICE_TIMEOUT_S = 60.0
REPLICATION_TIMEOUT_S = 30.0


@dataclass
class Service:
    role: str                # "master" or "replica", from the class's comment
    app: str                 # the app it goes into
    model: str               # the class's name
    source: str              # its models.py: the imports it uses, then the class
    env: dict[str, str]      # the assignments before its `make serve`
    command: list[str]       # `make serve` and its arguments


@dataclass
class Example:
    services: list[Service]  # in the python block's order
    lines: int               # the example's length in README lines
    own_app: str             # the app "Your own apps" makes (`shop`), named in the two lines below
    setup: str               # "Your own apps": the shell line creating its package
    makemigrations: str      # "Your own apps": its makemigrations command


def _section(readme: str, heading: str) -> str:
    start = readme.index(heading)
    end = readme.find("\n## ", start + len(heading))
    return readme[start:end if end >= 0 else len(readme)]


def _commands(block: str) -> list[list[str]]:
    """The block's commands as a shell reads them: continuation lines joined, comments dropped."""
    return [words for line in block.replace("\\\n", " ").splitlines() if (words := shlex.split(line, comments=True))]


def cqrs_example(readme: str) -> Example:
    """The master/replica example at the top of "CQRS replication" (before its first subsection)."""
    intro = _section(readme, SECTION).split("\n### ", 1)[0]
    blocks = fenced_blocks(intro)
    python_at, _, python = next(b for b in blocks if b[1] == "python")
    bash_at, _, bash = next(b for b in blocks if b[1] == "bash" and b[0] > python_at)
    after_bash = intro.index("```\n", bash_at + len("```bash\n") + len(bash)) + len("```\n")
    note = re.match(r"\s*\((?P<note>[^()]*)\)", intro[after_bash:])
    assert note is not None, "no (imports; makemigrations) note right after the example's bash block"
    example_text = intro[python_at:after_bash + note.end()]

    apps_block = next(body for _, lang, body in fenced_blocks(_section(readme, APPS_SECTION)) if lang == "bash")
    # The models file of "Your own apps" is a heredoc: its imports are a models file's.
    imports = re.findall(r"`(from [\w.]+ import \w+)`", note.group("note"))
    imports += re.findall(r"^from [\w.]+ import \w+$", apps_block, re.M)
    setup = next(line for line in apps_block.splitlines() if line.startswith("mkdir "))
    makemigrations = next(part.strip() for line in apps_block.splitlines() for part in line.split("&&")
                          if "makemigrations" in part)

    heads = list(_CLASS.finditer(python))
    commands = _commands(bash)
    services = []
    for index, head in enumerate(heads):
        end = heads[index + 1].start() if index + 1 < len(heads) else len(python)
        body = python[head.start():end].strip() + "\n"
        used = [line for line in imports if re.search(rf"\b{line.split()[-1]}\b", body)]
        words = next(words for words in commands
                     if f"SWITCHYARD_APPS={head['app']}" in words[:words.index("make")])
        cut = words.index("make")
        env = dict(word.split("=", 1) for word in words[:cut])
        services.append(Service(head["role"], head["app"], head["name"], "\n".join([*used, "", body]), env,
                                words[cut:]))
    return Example(services, example_text.count("\n") + 1, makemigrations.split()[-1], setup, makemigrations)


@pytest.mark.database_agnostic
def test_cqrs_example_is_found_and_short() -> None:
    """The parser finds the example's master and replica (app, imports, `make serve`), in under 20 README lines."""
    example = cqrs_example(README.read_text())
    assert [service.role for service in example.services] == ["master", "replica"]
    master, replica = example.services
    assert master.app != replica.app and master.model == replica.model
    assert "MasterMixin" in master.source and "ReplicaMixin" in replica.source
    for service in example.services:
        assert service.source.startswith("from ") and "import models" in service.source
        assert service.command[:2] == ["make", "serve"] and service.env["SWITCHYARD_APPS"] == service.app
    assert "CQRS_QUEUE" in replica.env and "DATABASE_URL" in replica.env and "CQRS_QUEUE" not in master.env
    assert example.makemigrations.endswith(f"makemigrations {example.own_app}")
    assert example.setup.startswith("mkdir ") and f"{example.own_app}/migrations" in example.setup
    assert example.lines < MAX_EXAMPLE_LINES, example.lines


@dataclass
class Broker:
    """The session's RabbitMQ, with an exchange and a replica queue of this test's own."""

    url: str
    exchange: str
    queue: str

    async def consumed(self) -> None:
        """Wait (bounded) until a consumer reads the queue: it then has its bindings (relays/cqrs_consumer.py
        binds before it consumes), and the master's changes, published unroutable, are no longer dropped."""
        import aio_pika

        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            try:
                async with asyncio.timeout(SERVICE_TIMEOUT_S):
                    while True:
                        channel = await connection.channel()
                        try:  # a queue not declared yet closes the channel: a new one for each look
                            queue = await channel.declare_queue(self.queue, passive=True)
                            if queue.declaration_result.consumer_count:
                                return
                        except aio_pika.exceptions.ChannelNotFoundEntity:
                            pass
                        finally:
                            with contextlib.suppress(Exception):
                                await channel.close()
                        await asyncio.sleep(0.05)  # bounded-poll
            except TimeoutError:
                pytest.fail(f"nothing consumes the replica's queue {self.queue} after {SERVICE_TIMEOUT_S} s")


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    box = Broker(require_rabbitmq(), unique("test.readme.cqrs"), unique("readme_crm"))
    yield box
    await drop_cqrs_layout(box.url, box.queue, box.exchange)


def service_env(service: Service, workdir: Path, broker: Broker) -> dict[str, str]:
    """The service's environment from the README, with the test's substitutions."""
    env = {**new_users_env(), **service.env, "AMQP_URL": broker.url, "CQRS_EXCHANGE": broker.exchange,
           "PYTHONPATH": str(workdir), "SWITCHYARD_STATIC_ROOT": str(workdir / f"static-{service.app}")}
    database = Path(service.env.get("DATABASE_URL", f"sqlite:///{service.app}.sqlite3").removeprefix("sqlite:///"))
    env["DATABASE_URL"] = f"sqlite:///{workdir / database.name}"
    if "CQRS_QUEUE" in service.env:
        env["CQRS_QUEUE"] = broker.queue
    return env


def create_app(example: Example, service: Service, env: dict[str, str], workdir: Path) -> None:
    """The app as "Your own apps" makes it: its package, its models.py, `makemigrations`."""
    def run(line: str, cwd: Path) -> None:
        done = subprocess.run(["bash", "-c", re.sub(rf"\b{example.own_app}\b", service.app, line)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=SERVICE_TIMEOUT_S)
        assert done.returncode == 0, f"{line}:\n{done.stdout}{done.stderr}"

    run(example.setup, workdir)
    (workdir / service.app / "models.py").write_text(service.source)
    run(example.makemigrations, ROOT)


@dataclass(eq=False)
class ReadmeServe(ServerProcess):
    """One of the example's `make serve` commands, run as a process group (make, then the server)."""

    serve: tuple[str, ...] = ()
    env: dict[str, str] | None = None

    def command(self, port: int) -> list[str]:
        make, *rest = self.serve
        arguments = [word for word in rest if not word.startswith("PORT=")]
        return [make, "-o", "install", *arguments, f"PORT={port}"]

    def environment(self) -> dict[str, str]:
        assert self.env is not None
        return self.env


def save_on_master(master: Service, env: dict[str, str], name: str) -> tuple[int, int]:
    """Create an author on the master and rename it (``manage.py shell`` in its environment): its pk and
    revision."""
    code = (f"import json; from {master.app}.models import {master.model}; "
            f"a = {master.model}.objects.create(name='draft'); a.name = {name!r}; a.save(); "
            "print(json.dumps([a.pk, a.cqrs_revision]))")
    saved = subprocess.run([".venv/bin/python", "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=SERVICE_TIMEOUT_S)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    pk, revision = json.loads(saved.stdout.splitlines()[-1])
    return pk, revision


def replica_row(database_url: str, table: str, pk: int) -> tuple[str, int] | None:
    with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=10)) as db:
        try:
            row = db.execute(f"SELECT name, cqrs_revision FROM {table} WHERE id = ?", (pk,)).fetchone()
        except sqlite3.OperationalError:  # not migrated yet
            return None
    return None if row is None else (row[0], row[1])


@pytest.mark.slow
@pytest.mark.pinned_backend
@pytest.mark.timeout(120)
async def test_readme_cqrs_example_replicates(tmp_path: Path, broker: Broker) -> None:
    """The README's master and replica as written: an author saved on the master reaches the replica, same revision."""
    example = cqrs_example(README.read_text())
    master, replica = example.services
    envs = {service.role: service_env(service, tmp_path, broker) for service in example.services}
    await asyncio.gather(*(asyncio.to_thread(create_app, example, service, envs[service.role], tmp_path)
                           for service in example.services))
    servers = [ReadmeServe(envs[service.role]["DATABASE_URL"], workdir=ROOT, group=True,
                           serve=tuple(service.command), env=envs[service.role]) for service in example.services]
    try:
        # Both at once (each migrates, collects static files, then serves): half the time of one after the other.
        # Both starts end before a failure of one is raised, so that the stops below find both processes.
        started = await asyncio.gather(*(asyncio.to_thread(server.start) for server in servers),
                                       return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        await broker.consumed()
        name = unique("Ursula")
        pk, revision = await asyncio.to_thread(save_on_master, master, envs["master"], name)
        assert revision == 1
        table = f"{replica.app}_{replica.model.lower()}"
        replica_url = envs["replica"]["DATABASE_URL"]
        await eventually(lambda: replica_row(replica_url, table, pk) == (name, revision), timeout=REPLICATION_TIMEOUT_S,
                         message=f"author {pk} on the replica as {name!r}, revision {revision}")
    finally:
        for server in servers:
            if server.proc is not None:
                server.stop()
    for server in servers:
        assert server.stopped_cleanly, f"{server.serve} needed SIGKILL"
        assert server.proc is not None and not group_members(server.proc.pid)
