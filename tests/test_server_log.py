"""The server-log check (tests/server_log.py) fails a test whose server logged an ERROR or a
traceback it did not declare, and only then."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import server_log
from tests.databases import new_database_url
from tests.protocol import eventually
from tests.servers import ROOT, ServerProcess, start_server

# A server on a database without its tables: the garbage-collection relay fails every run, and
# releasing its lease fails when the server stops (at the end of the module, whichever test is last);
# the announcement reader fails too.
GC_FAILED = r"ERROR relays\.periodic: garbage-collection loop failed"
ANNOUNCEMENTS_FAILED = r"ERROR relays\.periodic: announcements failed"
pytestmark = pytest.mark.server_errors(
    GC_FAILED, r"ERROR relays\.leader: could not release lease garbage-collection", ANNOUNCEMENTS_FAILED
)


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server whose garbage-collection relay logs an ERROR with a traceback every 0.2 s."""
    proc = start_server(new_database_url(tmp_path_factory.mktemp("unmigrated"), "unmigrated"), GC_INTERVAL_S="0.2")
    yield proc
    proc.stop()


async def failed_once(server: ServerProcess) -> None:
    await eventually(lambda: any("garbage-collection loop failed" in line for line in server.output[server.checked:]),
                     message="the garbage-collection relay to fail")


async def test_undeclared_server_error_fails_the_check(failing_server: ServerProcess) -> None:
    """An ERROR the test did not declare fails the check, which shows the log line and its traceback."""
    await failed_once(failing_server)
    with pytest.raises(pytest.fail.Exception) as failed:
        server_log.check()
    assert "ERROR relays.periodic: garbage-collection loop failed (" in str(failed.value)
    assert "Traceback (most recent call last)" in str(failed.value)


async def test_declared_server_error_passes_the_check(failing_server: ServerProcess) -> None:
    """An ERROR matching a declared pattern passes, and so does the traceback that follows it."""
    await failed_once(failing_server)
    server_log.check([GC_FAILED, ANNOUNCEMENTS_FAILED])


# --- the plugin inside a pytest run of its own: reported at teardown, per test, after kills ------

FAKE_SERVER = '''
import os, signal, sys, time

def stop(*_):
    print(os.environ["ON_STOP"], flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
print(os.environ["LINES"], flush=True)
print("SWITCHYARD_READY port=1", flush=True)
time.sleep(120)
'''

INNER_TESTS = f'''
import sys
import pytest
from tests.servers import ServerProcess

ERROR = "2025-01-01 00:00:00,000 ERROR app.fake: it broke\\nTraceback (most recent call last):\\nValueError: x"
WARNING = "2025-01-01 00:00:00,000 WARNING app.fake: odd\\nTraceback (most recent call last):\\nValueError: y"


class Fake(ServerProcess):
    def command(self, port):
        return [sys.executable, "-c", {FAKE_SERVER!r}]


@pytest.fixture
def fake():
    started = []
    def start(lines, on_stop=""):
        proc = Fake("none", {{"LINES": lines, "ON_STOP": on_stop}})
        proc.start()
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def shared():
    proc = Fake("none", {{"LINES": "2025-01-01 00:00:00,000 INFO app.fake: up", "ON_STOP": ERROR}})
    proc.start()
    yield proc
    proc.stop()


def test_clean(fake):
    fake("2025-01-01 00:00:00,000 INFO app.fake: fine")


def test_undeclared(fake):
    fake(ERROR)


@pytest.mark.server_errors(r"ERROR app\\.fake: it broke")
def test_declared(fake):
    fake(ERROR)


def test_warning_with_traceback(fake):
    fake(WARNING)


def test_killed(fake):
    fake(ERROR).kill()


def test_module_server_first(shared):
    pass


def test_module_server_last(shared):
    pass
'''


@pytest.mark.database_agnostic
def test_plugin_fails_each_test_at_teardown(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Undeclared ERRORs, tracebacks after a WARNING, a killed process's last words and a module server's
    shutdown ERROR each fail their own test at teardown; clean and declared ones pass."""
    pytester.makeini("[pytest]\nmarkers =\n    server_errors(*patterns): expected\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess(
        "-p", "tests.server_log", "-p", "no:django", "-p", "no:cacheprovider", "-p", "no:asyncio", "-rE"
    )
    result.assert_outcomes(passed=7, errors=4)
    result.stdout.fnmatch_lines_random([
        "ERROR test_inner.py::test_undeclared - Failed: a server logged 1 *",
        "ERROR test_inner.py::test_warning_with_traceback - Failed: a server logged 1 *",
        "ERROR test_inner.py::test_killed - Failed: a server logged 1 *",
        "ERROR test_inner.py::test_module_server_last - Failed: a server logged 1 *",
    ])
    assert "WARNING app.fake: odd" in result.stdout.str()


ERROR_LINE = "2025-01-01 00:00:00,000 ERROR app.fake: it broke\n"
INFO_LINE = "2025-01-01 00:00:00,000 INFO app.fake: fine\n"
TRACEBACK_LINES = ["Traceback (most recent call last):\n", '  File "x.py", line 1, in f\n', "ValueError: x\n"]


@pytest.mark.database_agnostic
def test_traceback_read_after_its_error_line_belongs_to_it() -> None:
    """A traceback read after the check judged its ERROR line is not judged again on its own."""
    output = [ERROR_LINE, *TRACEBACK_LINES, INFO_LINE]
    assert server_log.unexpected(output, 1, len(output), []) == []


@pytest.mark.database_agnostic
def test_traceback_read_after_an_info_line_is_judged() -> None:
    """A traceback read after the check judged a harmless log line is judged on its own."""
    output = [INFO_LINE, *TRACEBACK_LINES]
    [record] = server_log.unexpected(output, 1, len(output), [])
    assert record.lines == TRACEBACK_LINES
