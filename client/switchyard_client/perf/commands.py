"""``switchyard-client perf produce | consume | rtt``."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    perf = subparsers.add_parser("perf", help="load-test a server", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    perf.add_subparsers(dest="perf_command", required=True, metavar="MODE")
