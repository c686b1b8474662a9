"""Exit codes of ``switchyard-client``: one per kind of failure a script may want to tell apart."""

from __future__ import annotations

from switchyard_client.errors import (
    ConnectionRefused,
    HTTPError,
    RequestError,
    SendError,
    Unreachable,
)

OK = 0
ERROR = 1  # anything else: the message on stderr says what
USAGE = 2  # bad arguments (argparse's own code)
REFUSED = 3  # the server refused the connection or the call: no right, no such topic (HTTP 4xx)
TIMEOUT = 4  # nothing came in time: no ack, no response, fewer messages than -n
REJECTED = 5  # the server refused a message (an error ack), or a DASF module answered with an error
UNREACHABLE = 6  # no connection to the server at all
OFFLINE = 7  # status --check: the topic is not online
INTERRUPTED = 130  # Ctrl-C or SIGTERM

HELP = """\
exit codes:
  0    done
  1    another error (the message on stderr says what)
  2    bad arguments
  3    refused: no right, no such topic, bad token (a handshake or HTTP 4xx)
  4    timed out: no ack, no response, or fewer messages than asked for in time
  5    rejected: an error ack for a message, or a DASF module answered with an error
  6    the server cannot be reached
  7    status --check: the topic is offline or unknown
  130  interrupted (Ctrl-C, SIGTERM)"""


class UsageError(Exception):
    """Bad arguments found after parsing (a bad server URL or topic name, no messages to send)."""


def code_of(error: BaseException) -> int:
    if isinstance(error, UsageError):
        return USAGE
    if isinstance(error, ConnectionRefused):
        return REFUSED
    if isinstance(error, HTTPError):
        return REFUSED if 400 <= error.status < 500 else ERROR
    if isinstance(error, SendError | RequestError):
        return REJECTED
    if isinstance(error, Unreachable):
        return UNREACHABLE
    if isinstance(error, TimeoutError):
        return TIMEOUT
    if isinstance(error, OSError):
        return UNREACHABLE
    return ERROR
