"""``switchyard-client request`` (a DASF call to a backend module) and ``emit`` (a CloudEvent into the
outbox): one call, one JSON answer."""

from __future__ import annotations

import argparse
from typing import Any

from switchyard_client.cli import exits, output
from switchyard_client.cli.arguments import client_of, command, json_value, names_checked, seconds

REQUEST = """\
Call the DASF backend module on TOPIC (a demessaging module, or Client.serve) with the request JSON,
as its functions take it, and print the result as JSON. Progress reports the module sends go to stderr.
Exit 5 when the module answered with an error (the message on stderr), 4 when no answer came in time."""

REQUEST_EXAMPLES = """\
  switchyard-client request hello-topic '{"func_name": "hello_world"}'
  switchyard-client request hello-topic '{"func_name": "add", "a": 2, "b": 3}' --timeout 10
  switchyard-client --token "$TOKEN" request private-topic '{"func_name": "run"}' | jq ."""

EMIT = """\
Record a CloudEvent of TYPE from SOURCE in the server's outbox (POST /api/v1/outbox/events; the token
needs the outbox's add right, and the produce right on a topic it names) and print the stored event as
JSON. The server's relay publishes it to --target (the server's default when left out)."""

EMIT_EXAMPLES = """\
  switchyard-client --token "$TOKEN" emit com.example.order.created /shop --data '{"order": 17}'
  switchyard-client --token "$TOKEN" emit com.example.ping /cron --target topic --destination events
  switchyard-client --token "$TOKEN" emit com.example.moved /shop --key order-17 --subject orders/17 | jq -r .id"""


def add_request(subparsers: Any) -> None:
    request_parser = command(subparsers, "request", "call a DASF backend module", REQUEST, REQUEST_EXAMPLES)
    request_parser.add_argument("topic", metavar="TOPIC")
    request_parser.add_argument("call", type=json_value, metavar="JSON", help="the request, a JSON document")
    request_parser.add_argument("--timeout", type=seconds, default=60.0, metavar="SECONDS",
                                help="wait at most this long for the answer (default %(default)s)")
    request_parser.set_defaults(handler=request)


def add_emit(subparsers: Any) -> None:
    emit_parser = command(subparsers, "emit", "record an event in the outbox", EMIT, EMIT_EXAMPLES)
    emit_parser.add_argument("type", metavar="TYPE", help="the event's type, e.g. com.example.order.created")
    emit_parser.add_argument("source", metavar="SOURCE", help="where it comes from, a URI reference, e.g. /shop")
    emit_parser.add_argument("--data", type=json_value, metavar="JSON", help="its data, a JSON document")
    emit_parser.add_argument("--subject", help="what it is about, within SOURCE")
    emit_parser.add_argument("--key", help="its ordering / partition key")
    emit_parser.add_argument("--target", help="where the relay publishes it: topic, rabbitmq or redis")
    emit_parser.add_argument("--destination",
                             help="the topic, routing key or stream there (default: the target's own)")
    emit_parser.add_argument("--timeout", type=seconds, default=30.0, metavar="SECONDS",
                             help="wait at most this long for the answer (default %(default)s)")
    emit_parser.set_defaults(handler=emit)


async def request(args: argparse.Namespace) -> int:
    def progress(report: Any) -> None:
        output.note(f"progress: {output.json_text(report)}")

    async with client_of(args) as client:
        with names_checked():
            result = await client.request(args.topic, args.call, timeout=args.timeout, on_progress=progress)
    output.line(result)
    return exits.OK


async def emit(args: argparse.Namespace) -> int:
    async with client_of(args) as client:
        event = await client.emit(args.type, args.source, args.data, subject=args.subject, key=args.key,
                                  target=args.target, destination=args.destination, timeout_s=args.timeout)
    output.line(event.model_dump(mode="json"))
    return exits.OK
