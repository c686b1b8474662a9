"""Message traffic through faults: a paced producer that reconnects and keeps a ledger of its ok acks,
consumers in processes of their own (faults/consumer_process.py) whose acks are the arrivals."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets

from faults.row import Counts
from tests.servers import ROOT

RECONNECT_S = 0.1
# After the producer stops, how long its last in-flight sends may take to be answered.
LAST_ACKS_S = 10.0


@dataclass
class Ledger:
    """What the two ends saw: each ok-acked messageId with when it was sent, each arrival (an ack a
    consumer sent) with when, and how many sends were refused with an error ack."""

    acked: dict[str, float] = field(default_factory=dict)
    arrivals: list[tuple[str, float]] = field(default_factory=list)
    refused: int = 0
    refusals: list[str] = field(default_factory=list)

    def counts(self) -> Counts:
        return Counts.of(self.acked, [message_id for message_id, _ in self.arrivals])

    def missing(self) -> set[str]:
        return self.acked.keys() - {message_id for message_id, _ in self.arrivals}

    def acked_since(self, moment: float) -> int:
        return sum(1 for at in self.acked.values() if at >= moment)

    def recovery_after(self, moment: float) -> float | None:
        """From ``moment`` to the first arrival of a message sent (and acked) after it: traffic flows end to
        end again."""
        times = [at for message_id, at in self.arrivals if self.acked.get(message_id, -1.0) >= moment]
        return min(times) - moment if times else None


async def until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Wait (bounded) until ``condition()``; whether it came true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)  # bounded-poll
    return True


async def expect(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait (bounded) until ``condition()``; a scenario whose fault did not happen as planned proves
    nothing, so it fails (``what`` says what was awaited)."""
    if not await until(condition, timeout_s):
        raise TimeoutError(f"not within {timeout_s} s: {what}")


@dataclass
class Producer:
    """Sends numbered messages to ``urls`` (the next one after a lost connection) at ``rate_per_s``, at
    most ``window`` unanswered, until stopped; records ok acks and refusals in ``ledger``. A send whose
    connection died before its ack does not count: the sender was never told it was accepted."""

    urls: list[str]
    ledger: Ledger
    rate_per_s: float = 400.0
    window: int = 50
    # Padding added to each message's payload, to fill socket buffers sooner.
    padding_bytes: int = 0
    sent: int = 0
    connections: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
                    self.connections += 1
                    await self._stream(ws)
            # InvalidHandshake: a server killed mid-handshake answers nothing (InvalidMessage), and one
            # starting may refuse (InvalidStatus); both are a connection lost, to try again.
            except (OSError, TimeoutError, websockets.ConnectionClosed, websockets.InvalidHandshake):
                pass
            if not self.stopping.is_set():
                await asyncio.sleep(RECONNECT_S)  # back-off before the next attempt

    async def _stream(self, ws: websockets.ClientConnection) -> None:
        window = asyncio.Semaphore(self.window)
        unanswered = 0
        sent_at: dict[int, float] = {}

        async def read_acks() -> None:
            nonlocal unanswered
            async for raw in ws:
                ack = json.loads(raw)
                unanswered -= 1
                window.release()
                at = sent_at.pop(ack.get("context"), time.monotonic())
                if ack.get("result") == "ok":
                    self.ledger.acked[ack["messageId"]] = at
                else:
                    self.ledger.refused += 1
                    if len(self.ledger.refusals) < 5:
                        self.ledger.refusals.append(str(ack)[:200])

        async def send() -> None:
            nonlocal unanswered
            while not self.stopping.is_set():
                await window.acquire()
                n = self.sent
                self.sent += 1
                unanswered += 1
                sent_at[n] = time.monotonic()
                body = {"n": n, "padding": "x" * self.padding_bytes} if self.padding_bytes else {"n": n}
                payload = base64.b64encode(json.dumps(body).encode()).decode()
                await ws.send(json.dumps({"payload": payload, "properties": {}, "context": n}))
                await asyncio.sleep(1 / self.rate_per_s)  # the offered rate
            await until(lambda: unanswered <= 0, LAST_ACKS_S)

        reading = asyncio.create_task(read_acks())
        sending = asyncio.create_task(send())
        try:
            await asyncio.wait({reading, sending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, sending):
                task.cancel()
            results = await asyncio.gather(reading, sending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result


@dataclass
class ConsumerProcess:
    """faults/consumer_process.py on ``urls``: its ACK lines go to ``ledger.arrivals``; GOT lines (with
    ``withhold``) to ``taken``."""

    urls: list[str]
    ledger: Ledger
    withhold: bool = False
    taken: list[str] = field(default_factory=list)
    connections: int = 0
    lines: list[str] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        flags = ["--withhold"] if self.withhold else []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "faults.consumer_process", *flags, *self.urls,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self.reader = asyncio.create_task(self._read())
        if not await until(lambda: self.connections > 0, 15):
            raise RuntimeError("the consumer process did not connect:\n" + "".join(self.lines[-20:]))

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "ACK":
                self.ledger.arrivals.append((rest, time.monotonic()))
            elif kind == "GOT":
                self.taken.append(rest)
            else:
                if kind == "CONNECTED":
                    self.connections += 1
                if len(self.lines) < 1000:
                    self.lines.append(line)

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """End the process (SIGKILL: a crash, nothing flushed or closed) and read what it printed."""
        assert self.proc is not None and self.reader is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen process must be able to die of SIGTERM
            self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), 10)
        await asyncio.wait_for(self.reader, 10)
