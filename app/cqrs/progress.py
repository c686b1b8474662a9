"""The progress line of the CQRS commands (django-cqrs's ``--progress`` wording), written to a
terminal only: in a pipe or a file it would be noise among the data and logs."""

from __future__ import annotations

import time
from datetime import timedelta

from django.core.management.base import OutputWrapper


def line(done: int, total: int, rate: float) -> str:
    """``\\r<done> of <total> processed - <percent>% with rate <r> rps, to go <eta> ...``"""
    percent = int(100 * done / total) if total else 100
    eta = str(timedelta(seconds=int((total - done) / rate))) if rate else "n/a"
    return f"\r{done} of {total} processed - {percent}% with rate {rate:.1f} rps, to go {eta} ...{' ':20}"


class Progress:
    """Shown when asked for (``--progress``) and ``stream`` is a terminal; silent otherwise."""

    def __init__(self, stream: OutputWrapper, total: int, batch_size: int, wanted: bool = True) -> None:
        self.stream = stream
        self.total = total
        self.shown = wanted and stream.isatty()
        self._done = 0
        self._since = time.monotonic()
        if self.shown:
            self.stream.write(f"Processing {total} records with batch size {batch_size}")

    def advance(self, done: int) -> None:
        if not self.shown:
            return
        now = time.monotonic()
        elapsed = now - self._since
        rate = (done - self._done) / elapsed if elapsed > 0 else 0.0
        self._done, self._since = done, now
        self.stream.write(line(done, self.total, rate), ending="")
        self.stream.flush()

    def finish(self) -> None:
        if self.shown:
            self.stream.write("")  # end the progress line
