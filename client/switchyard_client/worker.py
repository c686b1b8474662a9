"""``Worker``: runs the work requests Switchyard pushes to a worker on ``/ws/workers/`` (the server's
README "Workers and work requests"), with an async handler of the application's.

On each connection the worker answers ``request_dynamic_metadata`` with its metadata, runs each
``work_request_available`` in a task of its own (the server gives at most the worker's registered
``concurrency`` at once), reports ``started``, the handler's ``progress`` and ``completed`` (naming the
run by ``attempt``), heartbeats at the interval ``connected`` gave, and cancels a handler on
``aborted``. A dropped connection is dialled again with back-off and jitter.

A connection that drops takes its running requests with it: the server gives them back to pending at
once (and a worker that connects starts with nothing running), so their handlers are cancelled and
nothing is reported for them; each runs again as a new attempt, here or on another worker, until
``WORK_REQUEST_MAX_ATTEMPTS``. Handlers must therefore tolerate being run again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from switchyard_client import codec
from switchyard_client.addresses import Server
from switchyard_client.errors import ClientClosed, WorkerRejected, WorkFailed
from switchyard_client.link import Dialer, Link
from switchyard_client.worker_frames import (
    SERVER_FRAME_TYPES,
    AbortedFrame,
    CompletedFrame,
    ConnectedFrame,
    ConnectionRejectedFrame,
    MetadataFrame,
    ProgressFrame,
    RequestDynamicMetadataFrame,
    StartedFrame,
    WorkerErrorFrame,
    WorkerFrame,
    WorkRequestAvailableFrame,
    WorkRequestPayload,
    server_frame,
)

logger = logging.getLogger("switchyard_client")

# The request as a worker is given it: id, task_name, task_data, priorities, attempts (this run's
# number), created_at, started_at.
WorkRequest = WorkRequestPayload
Result = Literal["success", "failure", "error"]

# The server's latest error frames kept for the application to read.
ERRORS_KEPT = 100
# Completions sent on the current connection, remembered so that one the server refuses (output over
# its limit, say) is reported again as ``error``: a completion that was taken is not acknowledged, and
# a refused one left unreported would keep its slot on the server busy for good.
COMPLETIONS_KEPT = 1000
# Shortest heartbeat interval taken from the server, so a bad value cannot make a tight loop.
MIN_HEARTBEAT_S = 0.05
HEARTBEAT = codec.dumps({"type": "heartbeat"})


class Progress(Protocol):
    """What a handler gets to report how far it is: ``await progress(0.4, "compiling")``. Reports are
    a sign of life to the server, not stored; a fraction outside 0 to 1 or a message over 1000
    characters raises ``ValueError``."""

    async def __call__(self, fraction: float | None = None, message: str | None = None) -> None: ...


Handler = Callable[[WorkRequest, Progress], Awaitable[Any]]


class Worker:
    """``async with Worker("ws://127.0.0.1:8000", token=KEY, metadata={"arch": "amd64"}) as worker:
    await worker.run(handle)``, where ``async def handle(request, progress) -> output`` runs one
    request: what it returns is the ``output_data`` of a ``success``; an exception makes it a
    ``failure`` whose output is ``{"error": "<type>: <text>"}`` (``WorkFailed`` chooses the result and
    output). ``token`` is the worker's own key (``manage.py createworker``, ``POST /api/v1/workers``),
    which is good for nothing but this socket: hence a class of its own rather than a ``Client`` call.

    Entering connects and waits for the server's welcome: a rejected token raises ``WorkerRejected``
    (a ``ConnectionRefused``) at once, an unreachable server ``TimeoutError`` after
    ``connect_timeout_s``. Work is offered only once ``run`` gave a handler.
    """

    def __init__(self, url: str, *, token: str, metadata: Mapping[str, Any] | None = None,
                 connect_timeout_s: float = 30.0, max_frame_bytes: int | None = 2**24,
                 backoff_initial_s: float = 0.1, backoff_maximum_s: float = 10.0) -> None:
        if not token:
            raise ValueError("token: the worker's key (manage.py createworker, or POST /api/v1/workers)")
        self.server = Server.parse(url)
        self.url = self.server.websocket("ws/workers/")
        self._metadata = _metadata_frame(metadata)
        self.dialer = Dialer({"Authorization": f"Token {token}"}, connect_timeout_s, max_frame_bytes,
                             backoff_initial_s, backoff_maximum_s)
        # The worker's name, from the server's welcome.
        self.name: str | None = None
        # The server's latest error frames (frames it could not take), newest last; each is logged too.
        self.errors: deque[WorkerErrorFrame] = deque(maxlen=ERRORS_KEPT)
        self._link: Link | None = None
        self._handler: Handler | None = None
        self._runs: dict[int, asyncio.Task[None]] = {}
        self._reported: OrderedDict[int, int | None] = OrderedDict()
        # Per connection: the server's welcome came; it asked for the metadata.
        self._welcomed = asyncio.Event()
        # A first welcome came (never cleared: a connection lost at once after it does not undo it).
        self._greeted = asyncio.Event()
        self._asked = False
        self._heartbeat_s = 1.0
        self._beating: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether a connection is open and the server welcomed the worker on it."""
        return self._link is not None and self._link.connected and self._welcomed.is_set()

    @property
    def running(self) -> frozenset[int]:
        """The ids of the requests whose handlers run now."""
        return frozenset(self._runs)

    async def start(self) -> Worker:
        """Connect and wait for the server's welcome (``async with`` does this)."""
        if self._link is not None:
            raise RuntimeError("this worker was started already")
        link = self._link = self.dialer.link(self.url, on_open=self._opened, on_frame=self._frame,
                                             on_lost=self._lost)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.dialer.connect_timeout_s
        await link.start(self.dialer.connect_timeout_s)
        # The handshake is accepted whatever the token: the first frame tells welcome or rejection.
        welcomed = asyncio.create_task(self._greeted.wait())
        ended = asyncio.create_task(link.wait_ended())
        try:
            await asyncio.wait({welcomed, ended}, timeout=max(0.0, deadline - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            welcomed.cancel()
            ended.cancel()
        if not self._greeted.is_set():
            failure = link.failure
            await self.close()
            raise failure or TimeoutError(f"{self.url}: no welcome within {self.dialer.connect_timeout_s} s")
        self._beating = asyncio.create_task(self._beat(), name=f"switchyard-heartbeat {self.url}")
        return self

    async def run(self, handler: Handler) -> None:
        """Run the requests the server gives with ``handler`` until the worker is closed (returns) or
        its token is rejected (``WorkerRejected``, e.g. disabled meanwhile). Cancelling it, or its end,
        closes the worker: requests still running go back to pending on the server."""
        if self._handler is not None:
            raise RuntimeError("run() was called already: a worker runs one handler")
        if self._link is None:
            await self.start()
        assert self._link is not None
        link = self._link
        self._handler = handler
        try:
            if self._asked:  # asked before there was a handler: work flows from this answer on
                await self._send_metadata()
            await link.wait_ended()
        finally:
            await self.close()
        if link.failure is not None and not isinstance(link.failure, ClientClosed):
            raise link.failure

    async def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Report new metadata (replacing the old whole; an admin's ``static_metadata`` still wins);
        kept for the connections to come."""
        self._metadata = _metadata_frame(metadata)
        if self._handler is not None and self._asked:
            await self._send_metadata()

    async def close(self) -> None:
        """Cancel running handlers and close the socket (the server returns their requests to
        pending); idempotent."""
        tasks = [*self._runs.values(), *([self._beating] if self._beating is not None else [])]
        self._runs, self._beating = {}, None
        for task in tasks:
            task.cancel()
        if self._link is not None:
            await self._link.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- the link's callbacks ---------------------------------------------------------------

    async def _opened(self) -> None:
        self._welcomed.clear()
        self._asked = False

    async def _frame(self, raw: Any) -> None:
        assert self._link is not None
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in SERVER_FRAME_TYPES:
            logger.debug("%s: a frame this client does not know, ignored: %.200r", self.url, raw)
            return
        try:
            frame = server_frame.validate_python(raw)
        except ValidationError as error:
            logger.warning("%s: an invalid %s frame, ignored: %s", self.url, kind, error)
            return
        if isinstance(frame, ConnectedFrame):
            self.name = frame.worker
            self._heartbeat_s = max(MIN_HEARTBEAT_S, frame.heartbeat_interval_s)
            self._welcomed.set()
            self._greeted.set()
        elif isinstance(frame, RequestDynamicMetadataFrame):
            self._asked = True
            if self._handler is not None:
                await self._send_metadata()
        elif isinstance(frame, WorkRequestAvailableFrame):
            self._take(frame.work_request, self._link.generation)
        elif isinstance(frame, AbortedFrame):
            task = self._runs.pop(frame.work_request_id, None)
            if task is not None:
                logger.info("%s: work request %d aborted: its handler is cancelled", self.url, frame.work_request_id)
                task.cancel()
        elif isinstance(frame, ConnectionRejectedFrame):
            # Ends the link for good (it raises no further): another try would be rejected alike.
            raise WorkerRejected(self.url, frame.reason_code, frame.reason)
        else:
            await self._server_error(frame)

    def _lost(self) -> None:
        self._welcomed.clear()
        self._asked = False
        self._reported.clear()
        runs, self._runs = self._runs, {}
        for task in runs.values():
            task.cancel()
        if runs:
            logger.warning("%s: connection lost with %d requests running: their handlers are cancelled (the server "
                           "gives them back to pending, to run again)", self.url, len(runs))

    # --- running requests -------------------------------------------------------------------

    def _take(self, request: WorkRequest, generation: int) -> None:
        handler = self._handler
        if handler is None:  # work is offered only after the metadata, sent only with a handler
            logger.error("%s: work request %d given before run(): not run", self.url, request.id)
            return
        if request.id in self._runs:
            return  # the server gives a request once per connection: keep the run there is
        self._runs[request.id] = asyncio.create_task(self._execute(request, generation, handler),
                                                     name=f"switchyard-work-request {request.id}")

    async def _execute(self, request: WorkRequest, generation: int, handler: Handler) -> None:
        try:
            await self._send(StartedFrame(type="started", work_request_id=request.id), generation)
            result: Result
            try:
                output = await handler(request, self._progress(request.id, generation))
                result = "success"
            except WorkFailed as failed:
                result, output = failed.result, failed.output_data
            except asyncio.CancelledError:
                raise  # aborted, the connection lost, or the worker closed: nothing to report
            except Exception as error:
                logger.warning("%s: work request %d (%s) failed", self.url, request.id, request.task_name,
                               exc_info=True)
                result, output = "failure", {"error": f"{type(error).__name__}: {error}"}
            await self._complete(request.id, _attempt(request), result, output, generation)
        finally:
            if self._runs.get(request.id) is asyncio.current_task():
                del self._runs[request.id]

    def _progress(self, request_id: int, generation: int) -> Progress:
        async def progress(fraction: float | None = None, message: str | None = None) -> None:
            try:
                frame = ProgressFrame(type="progress", work_request_id=request_id, fraction=fraction, message=message)
            except ValidationError as error:
                raise ValueError(f"progress: {_problems(error)}") from None
            if request_id in self._runs:  # reports after the run ended would only be refused
                await self._send(frame, generation)

        return progress

    async def _complete(self, request_id: int, attempt: int | None, result: Result, output: Any,
                        generation: int, *, first: bool = True) -> None:
        frame = CompletedFrame(type="completed", work_request_id=request_id, result=result, output_data=output,
                               attempt=attempt)
        try:
            text = codec.dump_frame(frame)
        except Exception as error:  # pydantic's or orjson's: the output is no JSON
            logger.warning("%s: work request %d: the handler's output is no JSON: %s", self.url, request_id, error)
            frame = CompletedFrame(type="completed", work_request_id=request_id, result="error",
                                   output_data={"error": f"the output is no JSON: {error}"[:1000]}, attempt=attempt)
            text = codec.dump_frame(frame)
        if await self._send_text(text, generation) and first:
            self._reported[request_id] = attempt
            while len(self._reported) > COMPLETIONS_KEPT:
                self._reported.popitem(last=False)

    async def _server_error(self, frame: WorkerErrorFrame) -> None:
        assert self._link is not None
        self.errors.append(frame)
        about = "" if frame.work_request_id is None else f" (work request {frame.work_request_id})"
        logger.warning("%s: the server could not take a frame%s: %s", self.url, about, frame.error)
        if frame.work_request_id is None or frame.work_request_id not in self._reported:
            return
        # A refused completion leaves the request running here on the server: report it once more, as
        # an error with the reason. Refused too (it ended meanwhile, another run), nothing is recorded.
        attempt = self._reported.pop(frame.work_request_id)
        await self._complete(frame.work_request_id, attempt, "error",
                             {"error": f"the server refused the report: {frame.error}"[:1000]},
                             self._link.generation, first=False)

    # --- sending ----------------------------------------------------------------------------

    async def _send(self, frame: WorkerFrame, generation: int) -> bool:
        return await self._send_text(codec.dump_frame(frame), generation)

    async def _send_text(self, text: str, generation: int) -> bool:
        """Send on the connection ``generation`` only: a later one knows nothing of its requests."""
        link = self._link
        if link is None or link.generation != generation:
            return False
        return await link.send(text)

    async def _send_metadata(self) -> None:
        assert self._link is not None
        await self._link.send(codec.dump_frame(self._metadata))

    async def _beat(self) -> None:
        assert self._link is not None
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self._link.send(HEARTBEAT)  # False, not sent, while reconnecting: nobody is listening


def _metadata_frame(metadata: Mapping[str, Any] | None) -> MetadataFrame:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata: a JSON object (a mapping), not {type(metadata).__name__}")
    try:
        frame = MetadataFrame(type="metadata", metadata=dict(metadata or {}))
    except ValidationError as error:
        raise ValueError(f"metadata: {_problems(error)}") from None
    try:
        codec.dump_frame(frame)
    except (TypeError, ValueError) as error:  # orjson's or pydantic's
        raise ValueError(f"metadata: no JSON: {error}") from None
    return frame


def _attempt(request: WorkRequest) -> int | None:
    # A running request was started at least once; a server that says otherwise gets no attempt.
    return request.attempts if request.attempts >= 1 else None


def _problems(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
                     for problem in error.errors())
