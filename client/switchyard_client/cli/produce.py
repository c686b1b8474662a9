"""``switchyard-client produce``: send messages given as arguments, or one per line of a file or stdin,
and print each one's id once the broker acked it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from switchyard_client import Producer, SwitchyardError
from switchyard_client.cli import exits, output
from switchyard_client.cli.arguments import client_of, command, key_value, names_checked, positive, seconds
from switchyard_client.cli.lines import lines
from switchyard_client.cli.output import Progress

# Messages sent and not yet acked, at most: enough to keep a remote broker busy, few enough that a
# failure leaves little in doubt.
WINDOW = 1000

DESCRIPTION = """\
Send messages to TOPIC and print one JSON line per message the broker acked: {"messageId": "..."}.
The messages are the -m arguments, or the lines of -f FILE, or of stdin when it is not a terminal
(empty lines are skipped; lines are sent as their bytes). Up to 1000 messages are in flight at once,
sent in order. The first error ack or ack timeout stops the input; what was in flight is still printed,
then the command exits 5 (error ack) or 4 (no ack)."""

EXAMPLES = """\
  switchyard-client produce my-topic -m hello
  switchyard-client produce my-topic -m one -m two -n 100 --quiet     # 200 messages, one summary line
  switchyard-client produce my-topic -p origin=cron -k device-7 -m '{"temperature": 21.5}'
  jq -c '.items[]' items.json | switchyard-client produce my-topic     # one message per line
  switchyard-client produce my-topic -f messages.txt --deliver-after 60"""


def add(subparsers: Any) -> None:
    parser = command(subparsers, "produce", "send messages to a topic", DESCRIPTION, EXAMPLES)
    parser.add_argument("topic", metavar="TOPIC", help="a topic name, or persistent://tenant/namespace/topic")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("-m", "--message", action="append", metavar="MESSAGE", help="a message (repeatable)")
    given.add_argument("-f", "--file", type=_opened, metavar="FILE",
                       help="send each line of FILE ('-': stdin, also from a terminal; end it with Ctrl-D)")
    parser.add_argument("-n", "--num-produce", type=positive, default=1, metavar="N",
                        help="send the messages N times (default 1); reads all of a FILE first when N > 1")
    parser.add_argument("-p", "--property", type=key_value, action="append", metavar="KEY=VALUE",
                        help="a property of every message (repeatable)")
    parser.add_argument("-k", "--key", help="the key of every message (Key_Shared subscriptions route by it)")
    parser.add_argument("--deliver-after", type=seconds, metavar="SECONDS",
                        help="deliver to Shared and Key_Shared subscriptions this much later")
    parser.add_argument("--timeout", type=seconds, default=30.0, metavar="SECONDS",
                        help="wait at most this long for each ack (default %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help='print only a summary at the end: {"sent": N, "seconds": S, "rate": R}')
    parser.set_defaults(handler=produce)


async def produce(args: argparse.Namespace) -> int:
    messages = _messages(args)
    options = {"properties": dict(args.property) if args.property else None, "key": args.key,
               "deliver_after": args.deliver_after}
    progress = Progress("produced", output.progress_wanted(args.quiet))
    async with client_of(args, send_timeout_s=args.timeout) as client:
        with names_checked():
            producer = await client.producer(args.topic)
        started = time.monotonic()
        try:
            async with progress:
                await _publish(producer, messages, options, args.quiet, progress)
        finally:
            if args.quiet:  # also after a failure or an interruption: what did go out
                elapsed = time.monotonic() - started
                output.line({"sent": progress.count, "seconds": round(elapsed, 3),
                             "rate": round(progress.count / elapsed, 1) if elapsed > 0 else None})
    return exits.OK


def _opened(path: str) -> int:
    """FILE as a file descriptor, opened while parsing so that a missing file is a usage error."""
    if path == "-":
        return sys.stdin.fileno()
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"a directory: {path!r}")
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot open {path!r}: {error.strerror}") from None


def _messages(args: argparse.Namespace) -> AsyncIterator[bytes]:
    times: int = args.num_produce
    if args.message:
        # As the shell gave them: bytes that are no UTF-8 survive (os.fsencode undoes Python's decoding).
        return _repeated([os.fsencode(message) for message in args.message], times)
    fd = args.file
    if fd is None:
        if sys.stdin.isatty():
            raise exits.UsageError("no messages: give -m MESSAGE, -f FILE, or pipe them in (one per line)")
        fd = sys.stdin.fileno()
    return lines(fd) if times == 1 else _read_then_repeated(fd, times)


async def _repeated(messages: list[bytes], times: int) -> AsyncIterator[bytes]:
    for _ in range(times):
        for message in messages:
            yield message


async def _read_then_repeated(fd: int, times: int) -> AsyncIterator[bytes]:
    messages = [message async for message in lines(fd)]
    async for message in _repeated(messages, times):
        yield message


async def _publish(producer: Producer, messages: AsyncIterator[bytes], options: dict[str, Any], quiet: bool,
                   progress: Progress) -> None:
    """Send every message (at most ``WINDOW`` unacked) and print their ids in order as their acks come.
    Sends run as tasks started in order: each writes its frame before it first waits (producer.py), so
    the frames leave in order. ``send_many`` would be as fast, but on a failure it tells no ids."""
    sends: asyncio.Queue[asyncio.Task[str] | None] = asyncio.Queue()
    slots = asyncio.Semaphore(WINDOW)

    async def submit() -> None:
        async for data in messages:
            await slots.acquire()
            sends.put_nowait(asyncio.ensure_future(producer.send(data, **options)))
        sends.put_nowait(None)

    submitter = asyncio.create_task(submit())
    failure: BaseException | None = None
    try:
        while (send := await _next(sends, submitter)) is not None:
            try:
                message_id = await send
            except SwitchyardError as error:  # an error ack or none: what is in flight still settles
                failure = failure or error
                submitter.cancel()
                continue
            finally:
                slots.release()
            progress.count += 1
            if not quiet:
                output.line({"messageId": message_id})
    finally:
        submitter.cancel()
        left = [sends.get_nowait() for _ in range(sends.qsize())]
        for task in left:
            if task is not None:
                task.cancel()
        await asyncio.gather(submitter, *(task for task in left if task is not None), return_exceptions=True)
    if failure is not None:
        raise failure
    if not submitter.cancelled() and (unreadable := submitter.exception()) is not None:
        raise unreadable


async def _next(sends: asyncio.Queue[asyncio.Task[str] | None],
                submitter: asyncio.Task[None]) -> asyncio.Task[str] | None:
    """The next send to wait for; None when there is none and will be none (the input ended or failed)."""
    while sends.empty():
        if submitter.done():
            return None
        getter = asyncio.ensure_future(sends.get())
        await asyncio.wait({getter, submitter}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
    return sends.get_nowait()
