"""``switchyard-client``: the client's command line. Each command module registers its subcommands
(``register(subparsers)``); a subcommand's ``handler`` is a coroutine taking the parsed arguments and
returning the exit code (exits.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from switchyard_client.cli import exits

DESCRIPTION = """\
Talk to a Switchyard server (or any broker with Apache Pulsar's websocket API) from the shell.
Messages go in and out as JSON lines; exit codes tell scripts what happened (see below)."""

EPILOG = exits.HELP


def parser() -> argparse.ArgumentParser:
    from switchyard_client.cli import commands
    from switchyard_client.perf import commands as perf_commands

    root = argparse.ArgumentParser(prog="switchyard-client", description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--url", default=os.environ.get("SWITCHYARD_URL", "ws://127.0.0.1:8000"),
                      help="the server (ws://, wss://, http:// or https://; default $SWITCHYARD_URL or %(default)s)")
    root.add_argument("--token", default=os.environ.get("SWITCHYARD_TOKEN"),
                      help="an API token (default $SWITCHYARD_TOKEN; none: anonymous)")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(subparsers)
    perf_commands.register(subparsers)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except Exception as error:  # the command line's last word: a code and one line
        print(f"switchyard-client: {error}", file=sys.stderr)
        return exits.code_of(error)
    return code


if __name__ == "__main__":
    sys.exit(main())
