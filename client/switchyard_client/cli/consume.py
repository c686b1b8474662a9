"""``switchyard-client consume`` (a durable subscription: messages are acked) and ``read`` (a reader:
nothing stored changes): one JSON line per message."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from switchyard_client import Consumer, Reader
from switchyard_client.cli import exits, output
from switchyard_client.cli.arguments import client_of, command, count, names_checked, seconds
from switchyard_client.cli.output import Progress

# A consumer that stops after N messages asks for them (pull mode), at most this many at a time: whatever
# else the broker pushed to it (acks free room for more) would go back to the subscription when it
# closes, counted as redelivered. Beyond this many, the last request may still ask for more than is left.
QUEUE_LIMIT = 1000

SHAPE = """\
Each message is one JSON line: {"messageId", "data" (the bytes as text when they are UTF-8, else
"data_base64"), "properties", "key", "publishTime", "redeliveryCount"}."""

CONSUME = f"""\
Receive messages of TOPIC's subscription SUBSCRIPTION (made on first use: it then gets what is published
from that moment on) and print each, then ack it (unless --no-ack). Stops after -n messages (default 1;
0: no limit). With --timeout, stops when that time is up: an exit 4 when fewer than N came, an exit 0
with -n 0.

{SHAPE}"""

CONSUME_EXAMPLES = """\
  switchyard-client consume my-topic -s audit                       # one message, then exit
  switchyard-client consume my-topic -s audit -n 0 > messages.jsonl  # until Ctrl-C (a progress line on stderr)
  switchyard-client consume my-topic -s workers -t shared -n 10 --timeout 5 || echo "fewer than 10 in 5 s"
  switchyard-client consume my-topic -s audit -n 0 | jq -r .data"""

READ = f"""\
Read TOPIC's messages from --start on without a subscription: nothing stored changes, nothing is acked.
Stops after -n messages (default 1; 0: no limit); --timeout as for consume.

{SHAPE}"""

READ_EXAMPLES = """\
  switchyard-client read my-topic --start earliest -n 0 --timeout 2   # the stored history (for 2 s)
  switchyard-client read my-topic                                     # the next message published
  switchyard-client read my-topic --start 0b6c3b7e-... -n 10          # the 10 messages after that one"""


def add_consume(subparsers: Any) -> None:
    consume_parser = command(subparsers, "consume", "receive and ack messages of a subscription", CONSUME,
                             CONSUME_EXAMPLES)
    consume_parser.add_argument("topic", metavar="TOPIC")
    consume_parser.add_argument("-s", "--subscription", required=True, help="the subscription's name")
    consume_parser.add_argument("-t", "--type", choices=("exclusive", "failover", "shared", "key_shared"),
                                default="exclusive", help="the subscription type (default %(default)s)")
    _add_limits(consume_parser)
    consume_parser.add_argument("--no-ack", action="store_true",
                                help="leave the messages unacked (they come back to the subscription)")
    consume_parser.set_defaults(handler=consume)


def add_read(subparsers: Any) -> None:
    read_parser = command(subparsers, "read", "read a topic's messages without a subscription", READ, READ_EXAMPLES)
    read_parser.add_argument("topic", metavar="TOPIC")
    read_parser.add_argument("--start", default="latest", metavar="earliest|latest|ID",
                             help="earliest (the stored history first), latest (default: what comes from now), "
                                  "or a message id (the messages after it)")
    _add_limits(read_parser)
    read_parser.set_defaults(handler=read)


def _add_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--num-messages", type=count, default=1, metavar="N",
                        help="stop after N messages (default 1; 0: no limit)")
    parser.add_argument("--timeout", type=seconds, metavar="SECONDS",
                        help="stop when this time is up (default: wait as long as it takes)")


async def consume(args: argparse.Namespace) -> int:
    async with client_of(args) as client:
        with names_checked():
            consumer = client.subscribe(args.topic, args.subscription, type=args.type,
                                        receiver_queue_size=_queue_size(args.num_messages),
                                        pull=args.num_messages > 0)
        return await _print(consumer, args, "consumed", ack=not args.no_ack)


async def read(args: argparse.Namespace) -> int:
    async with client_of(args) as client:
        with names_checked():
            reader = client.reader(args.topic, start=args.start, receiver_queue_size=_queue_size(args.num_messages))
        return await _print(reader, args, "read", ack=False)


def _queue_size(limit: int) -> int:
    return QUEUE_LIMIT if limit == 0 else min(limit, QUEUE_LIMIT)


async def _print(stream: Consumer | Reader, args: argparse.Namespace, verb: str, *, ack: bool) -> int:
    limit: int = args.num_messages
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    await stream.start()
    async with Progress(verb, output.progress_wanted()) as progress:
        while limit == 0 or progress.count < limit:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                message = await stream.receive(timeout=left)
            except TimeoutError:
                if limit == 0:
                    return exits.OK
                output.note(f"{verb} {progress.count} of {limit} messages within {args.timeout} s")
                return exits.TIMEOUT
            # Printed before it is acked: a message is lost to no crash between the two (at least once).
            output.line(output.message_json(message))
            if ack:
                await message.ack()
            progress.count += 1
    return exits.OK
