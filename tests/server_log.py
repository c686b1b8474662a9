"""Normal traffic logs no ERROR and no traceback: after every test, what the server processes
(tests/servers.py) printed since the last check is read, and an ERROR or CRITICAL log line or a
traceback fails the test at teardown, unless the test declared it expected with
``@pytest.mark.server_errors(r"pattern", ...)`` (``re.search`` over the log record: the log line and
the traceback that follows it). Loaded as a plugin with ``-p tests.server_log``.

Lines go to the test running when they are read: a module- or session-scoped server's are judged
with the test it served, and what a server logs while stopping at the end of a module with the last
test of that module (the hook runs after every fixture of the test has been torn down).
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import pytest

from tests.servers import WATCHED, ServerProcess

MARKER = "server_errors"
# Lines reach ``output`` through a pump thread: wait until every live server the test may have
# provoked has been quiet this long (at most GRACE_MAX_S) so what a test provoked at its very end is
# judged with that test. A server the test did not touch (ServerProcess.touched) and that printed
# nothing during it is not waited for: most tests touch no server, and 0.1 s each added up to a
# minute and a half of each pass.
QUIET_S = 0.1
# The wait after a test that declared no errors. Its unexpected lines fail the run whenever they are
# read (a line read after this check is judged by the next one, which still names the server and the
# record), so only lines a test declared must not be late: a full QUIET_S on some 400 tests was
# 40 s of each pass.
QUIET_UNDECLARED_S = 0.02
GRACE_MAX_S = 2.0
# An exited process: how long its pump may take to read what is still in the pipe.
DRAIN_TIMEOUT_S = 5.0
# A failure message shows the first record in full (up to this many lines), the others by their
# log line and the exception their traceback ended with, and at most this many of them.
FULL_RECORD_LINES = 120
LISTED_RECORDS = 20

# settings/base.py LOGGING ("%(asctime)s %(levelname)s %(name)s: %(message)s") and uvicorn's own
# handler ("ERROR:    message").
_LOG_LINE = re.compile(
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) |(?P<uvicorn>DEBUG|INFO|WARNING|ERROR|CRITICAL):\s)"
)
_BAD_LEVELS = ("ERROR", "CRITICAL")
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Record:
    """One log record: its log line and the lines printed after it (a traceback), or a run of
    lines no log line introduced."""

    lines: list[str]
    level: str | None

    @property
    def text(self) -> str:
        return "".join(self.lines)

    @property
    def bad(self) -> bool:
        return self.level in _BAD_LEVELS or any(TRACEBACK in line for line in self.lines)


def _level(line: str) -> str | None:
    match = _LOG_LINE.match(line)
    if match is None:
        return None
    return match.group("level") or match.group("uvicorn")


def records(output: Sequence[str], start: int, end: int) -> Iterator[Record]:
    """The records among ``output[start:end]``. Lines before the first log line continue a record
    that began before ``start``: if that record's log line was an ERROR it was judged with them
    (a traceback belongs to its log line), otherwise they are judged on their own."""
    current: Record | None = None
    if start < end and _level(output[start]) is None:
        head = next((i for i in range(start - 1, -1, -1) if _level(output[i]) is not None), None)
        if head is not None and _level(output[head]) in _BAD_LEVELS:
            while start < end and _level(output[start]) is None:
                start += 1
    for line in output[start:end]:
        level = _level(line)
        if level is not None or current is None:
            if current is not None:
                yield current
            current = Record([line], level)
        else:
            current.lines.append(line)
    if current is not None:
        yield current


def unexpected(output: Sequence[str], start: int, end: int, expected: Sequence[re.Pattern[str]]) -> list[Record]:
    """ERROR/CRITICAL records and tracebacks among ``output[start:end]`` no pattern matches."""
    return [r for r in records(output, start, end) if r.bad and not any(p.search(r.text) for p in expected)]


def provoked(proc: ServerProcess, declared: bool) -> bool:
    """Whether the test may have made ``proc`` print something it has not printed yet: it declared
    expected errors, it touched the process, or the process printed during it."""
    return declared or proc.touched or len(proc.output) > proc.checked


def settle(procs: Iterable[ServerProcess], declared: bool = True) -> None:
    """Give the pumps a bounded grace: exited processes are read to the end, live ones the test
    may have provoked until they have been quiet for QUIET_S (QUIET_UNDECLARED_S when the test
    declared no errors)."""
    quiet_s = QUIET_S if declared else QUIET_UNDECLARED_S
    live = []
    for proc in procs:
        if not proc.running:
            proc.drain(DRAIN_TIMEOUT_S)
        elif provoked(proc, declared):
            live.append(proc)
    began = time.monotonic()
    deadline = began + GRACE_MAX_S
    while live:
        now = time.monotonic()
        quiet_since = max([began, *(proc.last_line_at for proc in live)])
        if now - quiet_since >= quiet_s or now >= deadline:
            return
        time.sleep(min(quiet_s - (now - quiet_since), deadline - now))  # bounded-poll


def _describe(proc: ServerProcess) -> str:
    where = f"port {proc.bound_port}, " if proc.bound_port else ""
    return f"{type(proc).__name__} ({where}{proc.database_url})"


def _show(record: Record, full: bool) -> str:
    """The record, or its log line and the exception that ended its traceback."""
    if full or len(record.lines) <= 2:
        return "".join(record.lines[:FULL_RECORD_LINES])
    last = next((line for line in reversed(record.lines[1:]) if line[:1].strip()), record.lines[-1])
    return f"{record.lines[0]}    ...\n{last}"


def collect(expected: Sequence[re.Pattern[str]]) -> str | None:
    """Judge what every watched process printed since the last check (and mark it judged); a
    description of what was not expected, or None. Exited processes read to the end leave the watch."""
    procs = list(WATCHED)
    settle(procs, declared=bool(expected))
    found: list[tuple[ServerProcess, Record]] = []
    for proc in procs:
        proc.touched = False
        end = len(proc.output)
        found += [(proc, record) for record in unexpected(proc.output, proc.checked, end, expected)]
        proc.checked = end
        if not proc.running and not any(thread.is_alive() for thread in proc.pumps):
            WATCHED.remove(proc)
    if not found:
        return None
    shown = [f"--- {_describe(proc)}:\n{_show(record, index == 0)}"
             for index, (proc, record) in enumerate(found[:LISTED_RECORDS])]
    more = f"\n... and {len(found) - LISTED_RECORDS} more" if len(found) > LISTED_RECORDS else ""
    return (f"a server logged {len(found)} ERROR/traceback record(s) the test did not declare with "
            f"@pytest.mark.{MARKER}(...):\n" + "\n".join(shown) + more)


def check(expected: Sequence[str] = ()) -> None:
    """Fail if a watched process logged an ERROR or traceback none of ``expected`` matches."""
    problem = collect([re.compile(pattern) for pattern in expected])
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def expected_patterns(item: pytest.Item) -> list[str]:
    return [pattern for marker in item.iter_markers(MARKER) for pattern in marker.args]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        result = yield
    except BaseException as exc:
        # The teardown failed already: still mark the lines judged, and tell about them.
        problem = collect([re.compile(pattern) for pattern in expected_patterns(item)])
        if problem is not None:
            exc.add_note(problem)
        raise
    check(expected_patterns(item))
    return result
