"""The README's first screen runs as written on a fresh clone: `make serve`, then its example prints 5.

The commands are read from README.md (nothing of them is copied here): the `make serve` line of the
first bash block, the python block saved under the file name the text gives it, and the bash block
after it, run line by line by bash as a person pasting it would. Only the port differs (`PORT=0` picks
a free one; the commands' `8000` becomes that port). The copy has no `.venv`: `make serve` creates one
and installs what it installs, so an example needing a package `make serve` does not install fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ROOT, ServerProcess, group_members, stop_group

README = ROOT / "README.md"
README_PORT = "8000"
EXAMPLE_TIMEOUT_S = 120
# What a person who just cloned the repository has not got: the test session's database and settings,
# and its virtualenv.
_NOT_A_NEW_USERS = re.compile(r"^(DATABASE_URL|DJANGO_.*|SWITCHYARD_.*|VIRTUAL_ENV|PYTHONPATH|PYTEST_.*)$")


@dataclass
class FirstScreen:
    serve: str          # the `make serve` command
    module_name: str    # the example module's file name
    module: str         # its source
    commands: str       # the bash block that uses it
    expected: str       # what it prints, from its `# prints ...` comment


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """Fenced code blocks: (offset, language, body)."""
    return [(m.start(), m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def first_screen(readme: str) -> FirstScreen:
    """The commands of the README's first screen (everything above its first `---`)."""
    screen = readme.split("\n---\n", 1)[0]
    blocks = fenced_blocks(screen)
    serve = next(line.split("#", 1)[0].strip() for _, lang, body in blocks if lang == "bash"
                 for line in body.splitlines() if line.startswith("make serve"))
    index, (offset, _, module) = next((i, b) for i, b in enumerate(blocks) if b[1] == "python")
    before = screen[blocks[index - 1][0] if index else 0:offset]
    module_name = re.findall(r"\(`([\w-]+\.py)`\)", before)[-1]
    commands = next(body for _, lang, body in blocks[index + 1:] if lang == "bash")
    expected = re.findall(r"#\s*prints\s+(\S+)", commands)[0]
    return FirstScreen(serve, module_name, module, commands, expected)


@pytest.mark.database_agnostic
def test_first_screen_is_found():
    """The parser finds the first screen's serve command, module, commands and expected output."""
    screen = first_screen(README.read_text())
    assert screen.serve == "make serve"
    assert screen.module_name.endswith(".py") and "def " in screen.module
    assert screen.module_name in screen.commands and README_PORT in screen.commands
    assert screen.expected == "5"


def new_users_env() -> dict[str, str]:
    """The environment without what only this test session has (its database, its settings, its venv)."""
    env = {k: v for k, v in os.environ.items() if not _NOT_A_NEW_USERS.match(k)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not (Path(p).parent / "pyvenv.cfg").exists())
    return env


def fresh_clone(target: Path) -> Path:
    """What a clone of the working tree holds: its tracked and not ignored files (no .venv, no
    database), with their changes not yet committed."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        # .venv: a symlink in some worktrees (git ignores it only as a directory); gone: deleted, not committed.
        if name.split("/")[0] == ".venv" or not source.exists() or source.is_dir():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    return target


@dataclass(eq=False)
class MakeServe(ServerProcess):
    """The README's serve command run in a fresh clone (make, then the server it starts)."""

    serve: str = "make serve"

    def command(self, port: int) -> list[str]:
        return [*shlex.split(self.serve), "HOST=127.0.0.1", f"PORT={port}"]

    def environment(self) -> dict[str, str]:
        return new_users_env()


@pytest.mark.slow
@pytest.mark.pinned_backend
@pytest.mark.timeout(600)
def test_readme_first_screen_on_a_fresh_clone(tmp_path):
    """`make serve` in a fresh clone, then the README's example as written: its request prints 5."""
    screen = first_screen(README.read_text())
    clone = fresh_clone(tmp_path / "clone")
    assert not (clone / ".venv").exists()
    server = MakeServe(f"sqlite:///{clone / 'switchyard.sqlite3'}", workdir=clone, group=True, serve=screen.serve)
    log = tmp_path / "example.log"
    example = None
    try:
        server.start()
        (clone / screen.module_name).write_text(screen.module)
        # As pasted into a shell: one bash runs the lines, `&` leaves the backend module running (and
        # holding the output: so a file, and bash's exit, not the end of the output, ends the wait).
        with log.open("w") as out:
            example = subprocess.Popen(["bash", "-c", screen.commands.replace(README_PORT, str(server.port))],
                                       cwd=clone, env=new_users_env(), start_new_session=True,
                                       stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            example.wait(timeout=EXAMPLE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the example did not finish within {EXAMPLE_TIMEOUT_S} s:\n{log.read_text()}")
        output = log.read_text()
        assert example.returncode == 0, output
        assert screen.expected in output.splitlines(), output
    finally:
        module_stopped = example is None or stop_group(example.pid)
        server.stop()
    assert module_stopped, "the example's backend module needed SIGKILL"
    assert server.stopped_cleanly, "make serve needed SIGKILL"
    assert server.proc is not None and not group_members(server.proc.pid)
