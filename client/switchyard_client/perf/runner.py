"""One perf run's frame: the client, Ctrl-C, the live line each second, the summary and the result file.

A mode connects, calls ``begin`` once everything is connected, runs its load and drains it. Ctrl-C
(or SIGTERM) before ``begin`` abandons the run; after it, it ends the run early and the summary shows
what was done so far; a second Ctrl-C abandons the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switchyard_client import Client, codec
from switchyard_client.cli import exits
from switchyard_client.errors import SwitchyardError
from switchyard_client.perf import outcome, report
from switchyard_client.perf.report import Side

# Failures that end a run before it began: a refusal, no connection, a topic name that is no name.
SETUP_ERRORS = (SwitchyardError, TimeoutError, OSError, ValueError)
TICK_S = 1.0


class Session:
    def __init__(self, mode: str, args: argparse.Namespace, config: dict[str, Any]) -> None:
        self.mode = mode
        self.args = args
        self.config = {"url": report.public_url(args.url), **config}
        self.started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.interrupted = False
        self.sides: list[Side] = []
        self._stop = asyncio.Event()
        self._main: asyncio.Task[Any] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tty = sys.stderr.isatty()
        self._line_open = False

    @staticmethod
    def now() -> float:
        """The run's clock (seconds, monotonic): the event loop's, and ``time.monotonic_ns`` / 1e9."""
        return time.monotonic()

    def client(self) -> Client:
        return Client(self.args.url, token=self.args.token, connect_timeout_s=self.args.connect_timeout,
                      send_timeout_s=getattr(self.args, "send_timeout", 30.0))

    @property
    def began(self) -> bool:
        return bool(self.sides)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def execute(self, body: Callable[[], Awaitable[None]]) -> BaseException | None:
        """Run ``body`` under the run's signal handling; returns the error that ended it before it
        began (None: it ran)."""
        main = asyncio.current_task()
        assert main is not None
        self._main = main
        with self._signals():
            try:
                await body()
            except asyncio.CancelledError:
                if not self.interrupted:
                    raise
                main.uncancel()
            except SETUP_ERRORS as error:
                if self.began:
                    raise
                return error
            finally:
                await self._stop_ticker()
        return None

    def begin(self, banner: str, sides: list[Side]) -> None:
        """Everything is connected: the measured run starts now."""
        self.sides = sides
        self._print_live(banner, final=True)
        self._ticker = asyncio.create_task(self._tick())

    async def wait(self, timeout_s: float | None, *events: asyncio.Event) -> None:
        """Until one of ``events`` is set, the run is stopped, or ``timeout_s`` passed (None: no limit)."""
        waiters = {asyncio.create_task(event.wait()) for event in (self._stop, *events)}
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def note(self, text: str) -> None:
        """A line for the operator on stderr (between live lines)."""
        self._print_live(text, final=True)

    def finish(self, title: str, *, delivered: int, missing: int | None = None, unsettled: int = 0) -> int:
        """Print the summary, write the result file; returns the exit code."""
        now = self.now()
        for side in self.sides:
            side.tally.close(now)
        kinds = [kind for side in self.sides for kind in side.tally.errors]
        code = outcome.exit_code(kinds, delivered, interrupted=self.interrupted)
        self._end_live()
        print(report.summary(title, self.sides, now, missing=missing, unsettled=unsettled,
                             interrupted=self.interrupted), flush=True)
        self._write(report.result_json(self.mode, self.config, self.sides, now, started_at=self.started_at,
                                       exit_code=code, interrupted=self.interrupted, missing=missing,
                                       unsettled=unsettled))
        return code

    def failed(self, error: BaseException | None) -> int:
        """The run ended before it began: one line on stderr, the result file; returns the exit code."""
        if error is None:
            code, text = exits.INTERRUPTED, "interrupted before the run began"
        else:
            code = exits.USAGE if isinstance(error, ValueError) else exits.code_of(error)
            text = str(error) or type(error).__name__
        print(f"switchyard-client perf {self.mode}: {text}", file=sys.stderr, flush=True)
        self._write(report.result_json(self.mode, self.config, [], self.now(), started_at=self.started_at,
                                       exit_code=code, interrupted=self.interrupted, error=text))
        return code

    def _write(self, result: dict[str, Any]) -> None:
        if self.args.json is None:
            return
        path = Path(self.args.json)
        try:
            path.write_bytes(codec.to_json_bytes(result) + b"\n")
        except OSError as error:
            print(f"switchyard-client perf: cannot write {path}: {error.strerror or error}", file=sys.stderr)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._interrupt)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # no loop signal handlers here (Windows, not the main thread): Ctrl-C stays abrupt
            installed.append(signum)
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    def _interrupt(self) -> None:
        abandon = self.interrupted or not self.began
        self.interrupted = True
        self._stop.set()
        if abandon and self._main is not None:
            self._main.cancel()

    async def _tick(self) -> None:
        """The live line, each second on the second of the run (by absolute time: no drift)."""
        start = self.now()
        ticks = 0
        while True:
            ticks += 1
            await asyncio.sleep(max(0.0, start + ticks * TICK_S - self.now()))
            now = self.now()
            intervals = [(side, side.tally.tick(now)) for side in self.sides]
            self._print_live(report.live_line(intervals))

    async def _stop_ticker(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    def _print_live(self, line: str, *, final: bool = False) -> None:
        """On a terminal the live line is rewritten in place; elsewhere each is a line of its own."""
        if self._tty and not final:
            sys.stderr.write(f"\r\x1b[K{line}")
            self._line_open = True
        else:
            self._end_live()
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def _end_live(self) -> None:
        if self._line_open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._line_open = False
