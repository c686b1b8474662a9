"""Django's request log and the answers Switchyard gives with a 5xx status on purpose: answers, not failures."""

from __future__ import annotations

import logging
from http import HTTPStatus

# The bulk's view (app/api/bulk.py: namespace api-v1, url_name bulk). Not imported: logging is set
# up before the apps are loaded.
BULK_VIEW = "api-v1:bulk"


class AnswersAreNotErrors(logging.Filter):
    """Django logs every 5xx response as an ERROR. Switchyard answers two on purpose, logged at
    WARNING like a 4xx answer: 503, the status API's answer for a topic that is not online
    (docs/dasf-protocol.md section 10), which monitors poll; and a POST bulk's 502, an operation of
    the client's that failed and was rolled back (its results in the body). A crash is a 500 and
    stays an ERROR. (Django's documented ``status_code`` and ``request`` of each record tell them.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING and _is_an_answer(record):
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


def _is_an_answer(record: logging.LogRecord) -> bool:
    status = getattr(record, "status_code", None)
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        return True
    match = getattr(getattr(record, "request", None), "resolver_match", None)
    return status == HTTPStatus.BAD_GATEWAY and getattr(match, "view_name", None) == BULK_VIEW
