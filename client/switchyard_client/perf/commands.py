"""``switchyard-client perf produce | consume | rtt``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from switchyard_client.cli import exits

DESCRIPTION = """\
Load-test a server (or any broker with Apache Pulsar's websocket API), in the manner of pulsar-perf.
Every run is bounded by its duration (-d) and/or message count (-n); Ctrl-C ends it early with the
summary so far. A live line each second goes to stderr, the summary to stdout, and --json FILE writes
the whole result (configuration, totals, rates, errors, percentiles, histogram, per-second series)."""

EPILOG = """\
examples:
  switchyard-client perf produce orders -r 1000 -s 512 -d 30          # 1,000 msg/s for 30 s
  switchyard-client perf produce load --topics 4 -p 2 -r 0 -n 100000  # 8 producers, flat out
  switchyard-client perf consume orders -s perf -t shared -c 4 -d 60  # start before the producers
  switchyard-client perf rtt orders -r 500 -d 10 --json rtt.json      # publish -> receive latency

exit codes: 0 done; 3 a socket was refused (no such topic, no right); 4 nothing got through, or a
send got no ack in time; 5 the broker refused messages (error acks); 130 interrupted."""

# A payload travels as base64 (4/3 of its size) in a frame the client accepts up to 16 MiB.
MAX_SIZE = 12 * 1024 * 1024
SUBSCRIPTION_TYPES = ("exclusive", "failover", "shared", "key_shared")


def register(subparsers: Any) -> None:
    perf = subparsers.add_parser("perf", help="load-test a server", description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = perf.add_subparsers(dest="perf_command", required=True, metavar="MODE")

    produce = _mode(modes, "produce", "publish at a target rate; latency send -> ack", _produce)
    _topic_arguments(produce)
    _sending_arguments(produce)
    produce.add_argument("-p", "--producers", type=_positive_int, default=1, metavar="N",
                         help="producers per topic (default %(default)s)")
    _run_arguments(produce)

    consume = _mode(modes, "consume", "consume and ack; rate, throughput, latency from perf_sent_ns", _consume)
    _topic_arguments(consume)
    consume.add_argument("-s", "--subscription", default="perf", help="subscription name (default %(default)s)")
    consume.add_argument("-c", "--consumers", type=_positive_int, default=1, metavar="N",
                         help="consumers per topic on the subscription (default %(default)s; more than one "
                              "needs -t failover, shared or key_shared)")
    consume.add_argument("-t", "--type", type=str.lower, choices=SUBSCRIPTION_TYPES, default="exclusive",
                         help="subscription type (default %(default)s)")
    _queue_argument(consume)
    consume.add_argument("--unsubscribe", action="store_true",
                         help="delete the subscription at the end (a subscription left behind keeps a cache "
                              "topic's later messages stored until it acks them)")
    _run_arguments(consume)

    rtt = _mode(modes, "rtt", "publish and consume in one process; latency send -> receive", _rtt)
    rtt.add_argument("topic", metavar="TOPIC", help="the topic (a subscription of its own is removed at the end)")
    _sending_arguments(rtt)
    _queue_argument(rtt)
    _run_arguments(rtt)


def _mode(modes: Any, name: str, summary: str, handler: Callable[[argparse.Namespace], Any]) -> Any:
    parser = modes.add_parser(name, help=summary, description=f"perf {name}: {summary}.", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def _topic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="+", metavar="TOPIC",
                        help="topic name(s): a name, or persistent://tenant/namespace/name")
    parser.add_argument("--topics", dest="topic_count", type=_positive_int, default=1, metavar="N",
                        help="N topics named TOPIC-0 .. TOPIC-<N-1> (one TOPIC given)")


def _sending_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-r", "--rate", type=_rate, default=100.0, metavar="MSG_PER_S",
                        help="messages a second over all producers; 0: as fast as possible (default %(default)g)")
    parser.add_argument("-s", "--size", type=_size, default=1024, metavar="BYTES",
                        help="message payload size (default %(default)s)")
    parser.add_argument("--max-pending", type=_positive_int, default=1000, metavar="N",
                        help="unacked messages per producer at most (default %(default)s)")
    parser.add_argument("--send-timeout", type=_positive_seconds, default=10.0, metavar="SECONDS",
                        help="a send without an ack this long is counted as timed out (default %(default)g)")


def _queue_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--receiver-queue-size", type=_positive_int, default=1000, metavar="N",
                        help="messages in flight per consumer (default %(default)s)")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--duration", type=_seconds, default=10.0, metavar="SECONDS",
                        help="how long to run (default %(default)g); 0: until -n messages")
    parser.add_argument("-n", "--count", type=_count, default=0, metavar="N",
                        help="stop after N messages in all (default: no limit)")
    parser.add_argument("--json", type=_json_path, metavar="FILE", help="write the result as JSON to FILE")
    parser.add_argument("--connect-timeout", type=_positive_seconds, default=10.0, metavar="SECONDS",
                        help="give up connecting after this long (default %(default)g)")


def topics_of(names: list[str], count: int) -> list[str]:
    """The topics of a run: the names given, or ``count`` topics ``NAME-0`` ... from one name."""
    if count == 1:
        return list(names)
    if len(names) != 1:
        raise ValueError("--topics N takes one TOPIC (the names are TOPIC-0 .. TOPIC-<N-1>)")
    return [f"{names[0]}-{index}" for index in range(count)]


def problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of arguments, if anything."""
    if not args.duration and not args.count:
        return "-d 0 runs until -n messages: give -n, or a duration"
    if getattr(args, "consumers", 1) > 1 and getattr(args, "type", None) == "exclusive":
        return "an exclusive subscription takes one consumer: -t failover, shared or key_shared for -c > 1"
    return None


async def _produce(args: argparse.Namespace) -> int:
    from switchyard_client.perf import produce

    topics = _checked(args, "produce")
    return exits.USAGE if topics is None else await produce.run(args, topics)


async def _consume(args: argparse.Namespace) -> int:
    from switchyard_client.perf import consume

    topics = _checked(args, "consume")
    return exits.USAGE if topics is None else await consume.run(args, topics)


async def _rtt(args: argparse.Namespace) -> int:
    from switchyard_client.perf import rtt

    args.topics, args.topic_count = [args.topic], 1
    return exits.USAGE if _checked(args, "rtt") is None else await rtt.run(args, args.topic)


def _checked(args: argparse.Namespace, mode: str) -> list[str] | None:
    try:
        topics = topics_of(args.topics, args.topic_count)
    except ValueError as error:
        wrong: str | None = str(error)
    else:
        wrong = problem(args)
    if wrong is not None:
        print(f"switchyard-client perf {mode}: error: {wrong}", file=sys.stderr)
        return None
    return topics


def _number(text: str, kind: Callable[[str], float], what: str, *, low: float, open_low: bool = False) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or value < low or (open_low and value == low):
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}")
    return value


def _positive_int(text: str) -> int:
    return int(_number(text, int, "a whole number of 1 or more", low=1))


def _count(text: str) -> int:
    return int(_number(text, int, "a whole number of 0 or more", low=0))


def _size(text: str) -> int:
    size = int(_number(text, int, "a size in bytes (0 or more)", low=0))
    if size > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"at most {MAX_SIZE:,} bytes (the client's frame limit, base64 included)")
    return size


def _rate(text: str) -> float:
    return _number(text, float, "a rate (0 or more messages a second)", low=0)


def _seconds(text: str) -> float:
    return _number(text, float, "a duration in seconds (0 or more)", low=0)


def _positive_seconds(text: str) -> float:
    return _number(text, float, "a duration in seconds (more than 0)", low=0, open_low=True)


def _json_path(text: str) -> str:
    parent = Path(text).expanduser().resolve().parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"no such directory for the result file: {parent}")
    return str(Path(text).expanduser())
