"""One INFO line per HTTP request and per websocket handshake (``ACCESS_LOG``), secrets masked.

    127.0.0.1:50312 GET /api/v1/topics/x/status?token=*** 503 user:7 2.4 ms
    127.0.0.1:50318 WS /ws/hello-topic 101 anonymous 5.1 ms

Who called is the principal (app/auth/services.py ``principal_of``) the application found: this
middleware puts a ``Who`` in the scope (``WHO``; for websockets the ``Session``), which the HTTP
API's auth (app/api/auth.py ``Caller``), Django's view of the session user when a view looked it up
(app/server/session_caller.py) or the websocket consumer fills; ``-`` when none did (a bad token,
a static file).

A websocket is logged when its handshake is decided (101 accepted, 403 closed before accepting,
or the status of the HTTP answer that refused it), and once more when an accepted one ends: who
(the principal the consumer authenticated, in ``scope["switchyard.session"]``), the close code,
the session's duration and its frames in and out; never per frame.

    127.0.0.1:50318 WS /ws/hello-topic end user:7 1000 5012.3 ms frames in=12 out=40

Each operation of a bulk request (app/api/bulk.py) has a line of its own, marked ``bulk`` (the
bulk request's own line follows them):

    127.0.0.1:50312 POST /api/v1/topics 201 user:7 3.0 ms bulk

With ``SWITCHYARD_LOG_FORMAT=json`` each line is a JSON object with these as fields
(app/server/log_format.py). Query values whose name says
they are a credential (``token``, ``key``, ``password``, ...) are masked, so a ``?token=`` key never
reaches the log; the request target is logged as sent (percent-encoded) with anything unprintable
escaped, and cut at ``MAX_TARGET_CHARS``.

The lines are handed to a thread that writes them (``start_writer``, from the lifespan), so a slow
stderr never holds up the event loop; when it falls ``MAX_QUEUED_LINES`` behind, lines are dropped
and counted. Requests refused by app/server/protocols.py before they reach the application (400,
408, 413, 414, 431) have no access line.
"""

from __future__ import annotations

import logging
import queue
import time
from logging.handlers import QueueHandler, QueueListener
from typing import Any
from urllib.parse import quote, unquote_plus

logger = logging.getLogger("switchyard.access")

ASGIApp = Any
MASK = "***"
# A query parameter whose name (decoded, lower case) contains one of these has its value masked.
SECRET_NAME_PARTS = ("token", "key", "pass", "secret", "auth", "session", "csrf")
MAX_TARGET_CHARS = 512
MAX_QUEUED_LINES = 10_000
# uvicorn answers a websocket closed before it was accepted with 403.
_CLOSED_BEFORE_ACCEPT = 403
# The scope key of the request's ``Who`` (a websocket's ``Session``).
WHO = "switchyard.session"
NOBODY = "-"
_PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))


def _printable(text: str) -> str:
    """Escape what a client could use to forge a log line (control characters, newlines), and the
    backslash, so that an escape in the log always stands for the character it names."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def mask_query(query: str) -> str:
    """The query string with the values of credential-like parameters replaced by ``***``."""
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        if sep and any(word in unquote_plus(name).lower() for word in SECRET_NAME_PARTS):
            part = f"{name}={MASK}"
        parts.append(part)
    return "&".join(parts)


def request_target(scope: dict[str, Any]) -> str:
    """The path and the masked query as the client sent them (percent-encoded), safe to log."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope.get("path", "")
    # Some servers put the query into raw_path; it is masked with the rest.
    path, _, query_in_path = path.partition("?")
    query = scope.get("query_string", b"").decode("latin-1") or query_in_path
    target = f"{path}?{mask_query(query)}" if query else path
    if len(target) > MAX_TARGET_CHARS:
        # Cut after masking, so a cut never reveals part of a secret.
        target = target[:MAX_TARGET_CHARS] + "..."
    return _printable(target)


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    if not client:
        return "-"
    # Behind a proxy the host comes from X-Forwarded-For: text a client may have chosen.
    host, port = _printable(str(client[0])).replace(" ", "\\x20"), client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Who:
    """Who called, for the access line: the application sets ``principal`` once it knows."""

    __slots__ = ("principal",)

    def __init__(self) -> None:
        self.principal = NOBODY


class Session(Who):
    """An accepted websocket's figures, for its closing access line; the consumer sets ``principal``."""

    __slots__ = ("frames_in", "frames_out", "close_code")

    def __init__(self) -> None:
        super().__init__()
        self.frames_in = self.frames_out = 0
        self.close_code: int | None = None


def note_caller(scope: dict[str, Any], principal: str) -> None:
    """Tell the access line of the request of ``scope`` who called (nothing when there is no access log)."""
    who = scope.get(WHO)
    if isinstance(who, Who):
        who.principal = principal


def noted_caller(scope: dict[str, Any]) -> str | None:
    """Who the application said called, if it said so."""
    who = scope.get(WHO)
    return who.principal if isinstance(who, Who) and who.principal != NOBODY else None


def access_fields(scope: dict[str, Any], status: int | None, duration_s: float) -> dict[str, Any]:
    """What an access line says, as fields (the JSON log format's, and the plain line's)."""
    method = "WS" if scope["type"] == "websocket" else scope.get("method", "-")
    who = scope.get(WHO)
    principal = who.principal if isinstance(who, Who) else NOBODY
    return {"client": _client(scope), "method": _printable(method), "path": request_target(scope),
            "status": status, "principal": _printable(principal), "duration_ms": round(duration_s * 1000, 1)}


def _line(fields: dict[str, Any]) -> str:
    shown = "-" if fields["status"] is None else str(fields["status"])
    return (f"{fields['client']} {fields['method']} {fields['path']} {shown} {fields['principal']} "
            f"{fields['duration_ms']:.1f} ms")


def access_line(scope: dict[str, Any], status: int | None, duration_s: float) -> str:
    return _line(access_fields(scope, status, duration_s))


def _log(scope: dict[str, Any], status: int | None, duration_s: float) -> None:
    fields = access_fields(scope, status, duration_s)
    logger.info(_line(fields), extra={"access": fields})


def log_bulk_operation(bulk_scope: dict[str, Any], method: str, target: str, status: int, principal: str,
                       duration_s: float) -> None:
    """The access line of one operation of the bulk request of ``bulk_scope`` (``target``: its path
    and query). Only while the bulk request has an access line itself (``ACCESS_LOG``)."""
    if not isinstance(bulk_scope.get(WHO), Who):
        return
    # As a client would send it: percent-encoded (what is not printable ASCII), then masked and cut.
    path, _, query = quote(target, safe=_PRINTABLE_ASCII).partition("?")
    who = Who()
    who.principal = principal
    scope = {"type": "http", "method": method, "raw_path": path.encode(), "query_string": query.encode(),
             "client": bulk_scope.get("client"), WHO: who}
    fields = {**access_fields(scope, status, duration_s), "event": "bulk_operation"}
    logger.info(f"{_line(fields)} bulk", extra={"access": fields})


def _log_session_end(scope: dict[str, Any], session: Session, duration_s: float) -> None:
    fields = access_fields(scope, session.close_code, duration_s)
    principal = fields["principal"]
    fields.update(event="session_end", close_code=session.close_code,
                  frames_in=session.frames_in, frames_out=session.frames_out)
    code = "-" if session.close_code is None else str(session.close_code)
    logger.info(f"{fields['client']} WS {fields['path']} end {principal} {code} {fields['duration_ms']:.1f} ms "
                f"frames in={session.frames_in} out={session.frames_out}", extra={"access": fields})


class AccessLog:
    """ASGI middleware: the access line of each HTTP request (when the application is done with it)
    and of each websocket handshake (when it is decided)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self._websocket(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.monotonic()
        status: int | None = None
        scope = {**scope, WHO: Who()}

        # A plain function returning send's awaitable: no coroutine of its own per message.
        def send_and_note(message: dict[str, Any]) -> Any:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            # Failed before its response started: uvicorn answers 500.
            status = status or 500
            raise
        finally:
            _log(scope, status, time.monotonic() - started)

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.monotonic()
        logged = accepted = False
        session = Session()
        scope = {**scope, WHO: session}

        def log(status: int | None) -> None:
            nonlocal logged
            if not logged:
                logged = True
                _log(scope, status, time.monotonic() - started)

        def send_and_note(message: dict[str, Any]) -> Any:
            # After the handshake a frame costs one call, one test and one addition: no coroutine of
            # its own, the caller awaits send's.
            kind = message["type"]
            if kind == "websocket.send":
                session.frames_out += 1
            elif kind == "websocket.close":
                session.close_code = message.get("code", 1000)
                log(_CLOSED_BEFORE_ACCEPT)
            elif not logged:
                if kind == "websocket.accept":
                    nonlocal accepted
                    accepted = True
                    log(101)
                elif kind == "websocket.http.response.start":
                    log(message["status"])
            return send(message)

        try:
            # Frames in and a client's close are counted by the consumer (consumers/base.py): a
            # wrapper here would add a coroutine to every frame received.
            await self.app(scope, receive, send_and_note)
        finally:
            # The client left, or the application ended, before the handshake was decided.
            log(None)
            if accepted:
                _log_session_end(scope, session, time.monotonic() - started)


# Headers whose values are credentials: masked where a handshake's headers are logged.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


class UvicornHandshakeLines(logging.Filter):
    """uvicorn logs websocket handshakes at INFO with the query string as sent (a ``?token=`` in
    clear); the access log has them masked, so uvicorn's are dropped. With ``--log-level debug`` the
    websockets protocol it runs logs each handshake's request line and headers on the same logger:
    their credentials (an Authorization header, a ``?token=``) are masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        if record.msg.startswith('%s - "WebSocket %s"'):
            return False
        args = record.args
        if record.msg in ("< %s: %s", "> %s: %s") and isinstance(args, tuple) and len(args) == 2:
            if str(args[0]).lower() in SECRET_HEADERS:
                record.args = (args[0], MASK)
        elif record.msg == "< %s %s %s" and isinstance(args, tuple) and len(args) == 3:
            path, _, query = str(args[1]).partition("?")
            record.args = (args[0], f"{path}?{mask_query(query)}" if query else path, args[2])
        return True


class _BoundedQueueHandler(QueueHandler):
    """Hands records to the writer thread; drops them, counted, while the writer is too far behind."""

    def __init__(self, lines: queue.Queue[Any]) -> None:
        super().__init__(lines)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(self.dropped_record())
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def dropped_record(self) -> logging.LogRecord:
        return logging.LogRecord(logger.name, logging.WARNING, __file__, 0,
                                 f"{self.dropped} access lines dropped: the log output was too slow", None, None)


class _Listener(QueueListener):
    def __init__(self, lines: queue.Queue[Any], handlers: list[logging.Handler]) -> None:
        super().__init__(lines, *handlers, respect_handler_level=True)
        self.lines = lines

    def enqueue_sentinel(self) -> None:
        # None is QueueListener's sentinel. Waits for room: the queue may be full when the writer stops.
        self.lines.put(None)


def _handlers_of(log: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of ``log`` reaches: its own and its ancestors' up to one that does not
    propagate (what ``Logger.callHandlers`` walks)."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = log
    while current is not None:
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    return found


class _Writer:
    """The access logger's records go through a queue to a thread, which hands them to the handlers
    the logger would have used (its own and its ancestors', as configured in LOGGING)."""

    def __init__(self) -> None:
        self.listener: _Listener | None = None
        self.handler: _BoundedQueueHandler | None = None
        self.saved: tuple[list[logging.Handler], bool] = ([], True)

    def start(self, handlers: list[logging.Handler] | None = None) -> None:
        if self.listener is not None:
            return
        targets = _handlers_of(logger) if handlers is None else handlers
        lines: queue.Queue[Any] = queue.Queue(MAX_QUEUED_LINES)
        self.handler = _BoundedQueueHandler(lines)
        self.listener = _Listener(lines, list(targets))
        self.listener.start()
        self.saved = (list(logger.handlers), logger.propagate)
        logger.handlers = [self.handler]
        logger.propagate = False

    def stop(self) -> None:
        """Write what is queued (blocking), then log directly again, as configured."""
        if self.listener is None or self.handler is None:
            return
        logger.handlers, logger.propagate = self.saved
        if self.handler.dropped:
            self.listener.lines.put(self.handler.dropped_record())
        self.listener.stop()
        self.listener = self.handler = None


_writer = _Writer()
start_writer = _writer.start
stop_writer = _writer.stop
