"""``SWITCHYARD_LOG_FORMAT=json``: one JSON object per log line, for log collectors.

Every record has ``time``, ``level``, ``logger`` and ``message``; an exception adds ``exception``
(the traceback, as text). Access lines (app/server/access_log.py) add their fields (``client``,
``method``, ``path``, ``status``, ``principal``, ``duration_ms``; ``event``: ``session_end`` at a
websocket's end, with ``close_code``, ``frames_in``, ``frames_out``, or ``bulk_operation`` for an
operation of a bulk request), passed as the record's ``access`` attribute.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from app import codec


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return codec.dumps(line)
