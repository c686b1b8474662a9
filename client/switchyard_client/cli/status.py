"""``switchyard-client status`` (a topic's availability, once) and ``watch`` (availabilities as they
change, from the status feed)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from switchyard_client.cli import exits, output
from switchyard_client.cli.arguments import client_of, command, count, seconds

STATUS = """\
Print whether TOPIC's backend module answers the broker's pings, as the HTTP API tells it:
{"topic", "status": "online" | "offline" | "unknown", "last_ping", "last_pong", "api_info"}.
Only DASF topics are pinged (others are refused: exit 3). The exit code is 0 for any status read;
with --check it is 7 unless the topic is online."""

STATUS_EXAMPLES = """\
  switchyard-client status hello-topic
  switchyard-client status hello-topic | jq -r .status
  until switchyard-client status hello-topic --check > /dev/null; do sleep 1; done   # wait for the module"""

WATCH = """\
Print the availability of topics as it changes, from the status feed (/ws/status): one JSON line per
change. First comes each topic's status ({"type": "status", "topic", "status", "lastPing", "lastPong",
"apiInfo"}), then {"type": "synced", "topics": N} (those were all), then a status line whenever one
changes, and {"type": "gone", "topic"} when a topic is deleted or no longer visible. Without TOPIC,
every topic the token may see. Stops after -n status or gone lines (default 0: no limit); --timeout as
for consume (exit 4 when fewer than N came, 0 with -n 0)."""

WATCH_EXAMPLES = """\
  switchyard-client watch                                      # every visible topic, until Ctrl-C
  switchyard-client watch hello-topic other-topic -n 2          # both statuses now, then exit
  switchyard-client watch hello-topic | jq -c 'select(.status == "offline")'"""


def add_status(subparsers: Any) -> None:
    status_parser = command(subparsers, "status", "print a topic's availability", STATUS, STATUS_EXAMPLES)
    status_parser.add_argument("topic", metavar="TOPIC")
    status_parser.add_argument("--check", action="store_true", help="exit 7 unless the topic is online")
    status_parser.add_argument("--timeout", type=seconds, default=30.0, metavar="SECONDS",
                               help="wait at most this long for the answer (default %(default)s)")
    status_parser.set_defaults(handler=status)


def add_watch(subparsers: Any) -> None:
    watch_parser = command(subparsers, "watch", "print availabilities as they change", WATCH, WATCH_EXAMPLES)
    watch_parser.add_argument("topics", nargs="*", metavar="TOPIC")
    watch_parser.add_argument("-n", "--num-changes", type=count, default=0, metavar="N",
                              help="stop after N status or gone lines (default 0: no limit)")
    watch_parser.add_argument("--timeout", type=seconds, metavar="SECONDS",
                              help="stop when this time is up (default: wait as long as it takes)")
    watch_parser.set_defaults(handler=watch)


async def status(args: argparse.Namespace) -> int:
    async with client_of(args) as client:
        answer = await client.status(args.topic, timeout_s=args.timeout)
    output.line(answer.model_dump(mode="json"))
    if args.check and answer.status != "online":
        return exits.OFFLINE
    return exits.OK


async def watch(args: argparse.Namespace) -> int:
    limit: int = args.num_changes
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    changes = 0
    async with client_of(args) as client:
        feed = client.watch_status(args.topics or None)
        while limit == 0 or changes < limit:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                async with asyncio.timeout(left):
                    change = await feed.__anext__()
            except StopAsyncIteration:
                return exits.OK
            except TimeoutError:
                if deadline is None or loop.time() < deadline:
                    raise  # not this wait's own: the feed's connection failed
                if limit == 0:
                    return exits.OK
                output.note(f"{changes} of {limit} changes within {args.timeout} s")
                return exits.TIMEOUT
            # As the feed sent it: a field it left out (an apiInfo sent before) stays out.
            output.line(change.model_dump(mode="json", exclude_unset=True))
            if change.type != "synced":
                changes += 1
    return exits.OK
