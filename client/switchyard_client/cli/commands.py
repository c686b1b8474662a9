"""``switchyard-client produce | consume | read | request | status | watch | emit``."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add the commands to the root parser's ``subparsers``."""
