"""Django's request log and the availability answer: a 503 from Switchyard is an answer, not a failure."""

from __future__ import annotations

import logging
from http import HTTPStatus


class UnavailableIsAnAnswer(logging.Filter):
    """Django logs every 5xx response as an ERROR. Switchyard answers 503 on purpose only: the status
    API's answer for a topic that is not online (docs/dasf-protocol.md section 10), which monitors
    poll. Such a record is logged at WARNING, like a 4xx answer; a crash is a 500 and stays an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == HTTPStatus.SERVICE_UNAVAILABLE and record.levelno > logging.WARNING:
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True
