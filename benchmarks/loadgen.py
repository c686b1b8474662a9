"""The load generator: runs one workload against a running broker and prints its result as JSON.

    python -m benchmarks.loadgen W1 --producer ws://127.0.0.1:PORT/ws/ --topic T --count 20000 \
        --server-pid PID

A process of its own (not the runner's, not the server's): it gets a core and an event loop to
itself, and the 10,000 sockets of W4 die with it. Every workload stops at ``--count`` or at
``--deadline-s``, whichever comes first, and reports what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from benchmarks import wire
from benchmarks.connections import run_connections
from benchmarks.request_reply import run_request_reply
from benchmarks.throughput import run_fanout

WORKLOADS = ("W1", "W2", "W3", "W4")


def build(args: argparse.Namespace) -> Coroutine[Any, Any, dict[str, Any]]:
    consumer_bases = args.consumer or [args.producer]
    if args.workload in ("W1", "W2"):
        return run_fanout(
            producer_base=args.producer, consumer_bases=consumer_bases, topic=args.topic,
            consumers=args.consumers or (1 if args.workload == "W1" else 10), count=args.count,
            window=args.window, payload_bytes=args.payload_bytes, deadline_s=args.deadline_s,
            server_pids=args.server_pid,
        )
    if args.workload == "W3":
        return run_request_reply(
            requester_base=args.producer, responder_base=consumer_bases[0], topic=args.topic,
            count=args.count, payload_bytes=args.payload_bytes, deadline_s=args.deadline_s,
            server_pids=args.server_pid,
        )
    return run_connections(
        consumer_base=consumer_bases[0], topic=args.topic, count=args.count, concurrency=args.concurrency,
        deadline_s=args.deadline_s, server_pid=args.server_pid[0],
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one benchmark workload; prints JSON.")
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--producer", required=True, help="websocket base of the producer side, e.g. ws://h:p/ws/")
    parser.add_argument("--consumer", action="append", default=[],
                        help="websocket base for consumers (repeat: consumers are spread round-robin); "
                             "W3: the responder's side; default: --producer")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True, help="messages, round trips or connections")
    parser.add_argument("--deadline-s", type=float, default=30.0)
    parser.add_argument("--consumers", type=int, default=0, help="W1/W2 consumers (default 1 / 10)")
    parser.add_argument("--window", type=int, default=100, help="W1/W2 producer acks outstanding")
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=200, help="W4 handshakes in flight")
    parser.add_argument("--server-pid", type=int, action="append", default=[],
                        help="server process(es) to read CPU and memory of")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.server_pid:
        print("--server-pid is required (CPU and memory are read from /proc)", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(build(args))
    else:
        # The same loop as the servers: the load generator must not be the slower side.
        result = uvloop.run(build(args))
    result["workload"] = args.workload
    sys.stdout.write(wire.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
