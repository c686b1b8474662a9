"""What the commands print: one JSON document per line on stdout (flushed, so a pipe sees each line
as it comes), messages in one shape, and a live progress line on a terminal's stderr."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import time
from collections import deque
from typing import Any, TextIO

import orjson

from switchyard_client import Message

# The progress line appears once a run took this long, and changes at most this often.
PROGRESS_AFTER_S = 1.0
PROGRESS_EVERY_S = 0.25
# The rate shown is over this last stretch of the run.
RATE_WINDOW_S = 2.0


def line(value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    stdout = sys.stdout.buffer
    stdout.write(orjson.dumps(value) + b"\n")
    stdout.flush()


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def note(text: str) -> None:
    """A line for the person at the terminal (stderr): never part of what scripts parse."""
    print(f"switchyard-client: {text}", file=sys.stderr, flush=True)


def message_json(message: Message) -> dict[str, Any]:
    """A delivered message as ``consume`` and ``read`` print it: its bytes as text when they are UTF-8,
    else as base64 under ``data_base64``."""
    shown: dict[str, Any] = {"messageId": message.id}
    try:
        shown["data"] = message.data.decode()
    except UnicodeDecodeError:
        shown["data_base64"] = base64.b64encode(message.data).decode("ascii")
    publish_time = message.frame.get("publishTime")
    shown.update(properties=message.properties, key=message.key,
                 publishTime=publish_time if isinstance(publish_time, str) else None,
                 redeliveryCount=message.redelivery_count)
    return shown


def progress_wanted(quiet: bool = False) -> bool:
    """A progress line on stderr only on a terminal, and not over the lines printed to the same
    terminal: stdout goes elsewhere (a file, a pipe) or prints nothing until the end (``--quiet``)."""
    return sys.stderr.isatty() and (quiet or not sys.stdout.isatty())


class Progress:
    """``async with Progress("consumed", enabled) as progress: ... progress.count += 1``: while the
    block runs, a line ``consumed 12345 messages, 4021 msg/s`` rewritten in place (``\\r``) on
    ``stream``; erased at the end."""

    def __init__(self, verb: str, enabled: bool, stream: TextIO | None = None, *,
                 after_s: float = PROGRESS_AFTER_S, every_s: float = PROGRESS_EVERY_S) -> None:
        self.verb = verb
        self.count = 0
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self._after_s = after_s
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self._shown = False
        self._samples: deque[tuple[float, int]] = deque()

    async def __aenter__(self) -> Progress:
        if self.enabled:
            self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._shown:
            self._write("\r\x1b[K")

    def text(self, now: float) -> str:
        """The line for ``now`` (``time.monotonic()``)."""
        self._samples.append((now, self.count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        since, before = self._samples[0]
        rate = (self.count - before) / (now - since) if now > since else 0.0
        return f"{self.verb} {self.count} messages, {rate:.0f} msg/s"

    async def _run(self) -> None:
        self._samples.append((time.monotonic(), self.count))
        await asyncio.sleep(self._after_s)
        while True:
            self._write(f"\r{self.text(time.monotonic())}\x1b[K")
            self._shown = True
            await asyncio.sleep(self._every_s)

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a terminal gone is no reason to stop the run
            self._stream.write(text)
            self._stream.flush()
