"""What the commands share on their way in: a parser whose errors are one line, argument types that
refuse bad values while parsing (exit 2), and the client made from the root options."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import orjson
from pydantic import ValidationError

from switchyard_client import Client
from switchyard_client.cli import exits


class Parser(argparse.ArgumentParser):
    """Bad arguments end in one line on stderr and exit 2, not argparse's usage block: scripts log it."""

    def error(self, message: str) -> NoReturn:
        self.exit(exits.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command(subparsers: Any, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with ``examples`` and the exit codes."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=description, epilog=f"examples:\n{examples}\n\n{exits.HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def json_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from None


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"not key=value: {text!r}")
    return key, value


def seconds(text: str) -> float:
    """A duration in seconds: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")
    return value


def count(text: str) -> int:
    """A number of messages: an int >= 0 (0: no limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number >= 0: {text!r}")
    return value


def positive(text: str) -> int:
    value = count(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"not a number >= 1: {text!r}")
    return value


def client_of(args: argparse.Namespace, **options: Any) -> Client:
    """The client the root options (``--url``, ``--token``, ``--connect-timeout``) describe."""
    try:
        return Client(args.url, token=args.token, connect_timeout_s=args.connect_timeout, **options)
    except ValueError as error:
        raise exits.UsageError(f"--url: {error}") from None


@contextlib.contextmanager
def names_checked() -> Iterator[None]:
    """Around making a producer, consumer or reader: a topic name the client refuses is a usage error."""
    try:
        yield
    except ValidationError:
        raise  # a frame or answer the client could not read: no usage error
    except ValueError as error:
        raise exits.UsageError(str(error)) from None
