"""``switchyard-client``: the client's command line. Each command module registers its subcommands
(``register(subparsers)``); a subcommand's ``handler`` is a coroutine taking the parsed arguments and
returning the exit code (exits.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from switchyard_client.cli import exits
from switchyard_client.cli.arguments import Parser, seconds

DESCRIPTION = """\
Talk to a Switchyard server (or any broker with Apache Pulsar's websocket API) from the shell.
Messages go in and out as JSON lines; exit codes tell scripts what happened (see below).
`switchyard-client COMMAND --help` shows a command's options and examples."""

EPILOG = exits.HELP


def parser() -> argparse.ArgumentParser:
    from switchyard_client.cli import commands
    from switchyard_client.perf import commands as perf_commands

    # Subcommand parsers are made of the root's class: their errors are one line too.
    root = Parser(prog="switchyard-client", description=DESCRIPTION, epilog=EPILOG,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--url", default=os.environ.get("SWITCHYARD_URL", "ws://127.0.0.1:8000"),
                      help="the server (ws://, wss://, http:// or https://; default $SWITCHYARD_URL or %(default)s)")
    root.add_argument("--token", default=os.environ.get("SWITCHYARD_TOKEN"),
                      help="an API token (default $SWITCHYARD_TOKEN; none: anonymous)")
    root.add_argument("--connect-timeout", type=seconds, default=10.0, metavar="SECONDS",
                      help="keep trying to connect this long (server restarting, busy) before giving up "
                           "(default %(default)s)")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(subparsers)
    perf_commands.register(subparsers)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = asyncio.run(_run(args))
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's cleanup ran
        return exits.INTERRUPTED
    except BrokenPipeError:  # stdout's reader went away (`... | head -1`): nobody is left to tell
        _quiet_stdout()
        return exits.ERROR
    except Exception as error:  # the command line's last word: a code and one line
        print(f"switchyard-client: {error or type(error).__name__}", file=sys.stderr)
        return exits.code_of(error)
    return code


async def _run(args: argparse.Namespace) -> int:
    """The handler, ended as Ctrl-C ends it also by SIGTERM: cancelled, so that it closes its sockets."""
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):  # no signal handlers in the Windows event loop
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        code: int = await args.handler(args)
    except asyncio.CancelledError:
        return exits.INTERRUPTED
    return code


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush at exit finds no broken pipe."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())

