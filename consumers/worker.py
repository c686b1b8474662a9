"""``/ws/workers/``: a worker's socket. Frames in consumers/worker_frames.py; what they do is decided
in app/work (sessions.py, queue.py); the protocol is in README "Workers and work requests".

The token comes as the broker's consumers take it (consumers/auth.py ``token_from_scope``), but is
looked up here, as a worker's (``worker_for_key``): the connection middleware leaves this path to
us. Rejections are frames: ``connection_rejected`` with a ``reason_code``, then close 4401.

Once connected the server asks for the worker's metadata; work is offered once it came, and again
whenever this worker may take more (it completed a request, one was aborted) or work became runnable
anywhere (app/work/fleet.py). The connection keeps the ids it was given and not yet finished, so it
knows when it has a free slot without asking the database.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone
from pydantic import ValidationError

from app.broker.admission import Refusal
from app.broker.runtime import BrokerRuntime, get_runtime
from app.server.metrics import TALLY
from app.work import reports, sessions
from app.work.fleet import Searched
from app.work.models import Status
from app.work.queue import search
from app.work.tasks import InvalidTaskData
from app.work.workers import TOKEN_DISABLED, USERNAME_PREFIX, InvalidMetadata, mark_seen, report_metadata
from consumers.auth import client_address, token_from_scope
from consumers.base import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NAME_TAKEN,
    CLOSE_REVOKED,
    CLOSE_TOO_SLOW,
    FrameConsumer,
    describe,
)
from consumers.worker_frames import (
    WORKER_FRAME_TYPES,
    AbortedFrame,
    CompletedFrame,
    ConnectedFrame,
    ConnectionRejectedFrame,
    HeartbeatFrame,
    MetadataFrame,
    ProgressFrame,
    RequestDynamicMetadataFrame,
    StartedFrame,
    WorkerErrorFrame,
    WorkRequestAvailableFrame,
    work_request_payload,
    worker_frame,
)

logger = logging.getLogger(__name__)

REJECTIONS = {
    sessions.TOKEN_MISSING: "no token: send 'Authorization: Token <key>' (or ?token=<key>)",
    sessions.TOKEN_UNKNOWN: "no worker has this token",
    TOKEN_DISABLED: "this worker's token is disabled",
}


class WorkerConsumer(FrameConsumer):

    metrics_kind = "worker"

    def __init__(self) -> None:
        super().__init__()
        self.runtime: BrokerRuntime | None = None
        self.worker_id = 0
        self.worker_name = ""
        self.rejection: str | None = None
        self.connected_at = timezone.now()
        self.heard_at = self.connected_at
        self.seen_written: float | None = None
        # Work is offered once the worker sent its metadata.
        self.ready = False
        self.concurrency = 1
        # Requests given on this connection and not finished yet, with the run (``attempts``) each
        # was given as: a completion names its run, so a late report of an earlier one is no report.
        self.running: dict[int, int] = {}
        self.searching: asyncio.Task[None] | None = None
        self.search_again = False
        # Told when the current search ends (fleet rounds), whether it took anything, and the signature
        # of the metadata it searched with.
        self.on_searched: list[Searched] = []
        self.found = False
        self.signature: str | None = None
        # Whether its session was opened (the database says connected), and the task ending it.
        self.opened = False
        self.ending: asyncio.Task[None] | None = None

    # --- handshake --------------------------------------------------------------------------

    async def before_accept(self) -> Refusal | None:
        runtime = get_runtime()
        key = token_from_scope(self.scope)
        if not key:
            self.rejection = sessions.TOKEN_MISSING
            return None
        address, now = client_address(self.scope), runtime.loop.time()
        if not runtime.admission.may_look_up(address, now):
            return Refusal(HTTPStatus.TOO_MANY_REQUESTS, "too many failed authentications from this address")
        admitted = await database_sync_to_async(sessions.admit)(key)
        if admitted is None:
            runtime.admission.lookup_failed(address, now)
            self.rejection = sessions.TOKEN_UNKNOWN
            return None
        self.rejection = admitted.rejection
        self.worker_id, self.worker_name = admitted.worker_id, admitted.name
        # Revocations match the token (disabled or deleted, also with its owner), not the principal:
        # the owner is inactive from the start, and saving it announces "user:<id>" revoked, which
        # would close a socket of that principal connecting just after the worker was registered.
        self.token_id, self.principal = admitted.token_id, f"{USERNAME_PREFIX}{admitted.name}"
        if self.session is not None:
            self.session.principal = self.principal
        return None

    async def on_connect(self) -> None:
        if self.rejection is not None:
            self.reject(self.rejection)
            return
        # Registered (get_runtime().sockets) before this: a revocation from now on reaches us.
        self.runtime = get_runtime()
        opened = await database_sync_to_async(sessions.open_session)(self.worker_id)
        if opened is None:
            self.reject(TOKEN_DISABLED)
            return
        self.connected_at = self.heard_at = opened.connected_at
        self.concurrency = opened.concurrency
        self.opened = True
        if self.closing:  # revoked, or the worker left, while the session opened
            self._end_session()
            return
        if opened.released:
            logger.info("worker %s connected again: %d requests of its earlier session returned",
                        self.worker_name, len(opened.released))
        self.runtime.fleet.add(self)
        lost_after_s = settings.WORKER_LOST_AFTER_S
        self.push_model(ConnectedFrame(
            worker=self.worker_name, heartbeat_interval_s=sessions.heartbeat_interval_s(lost_after_s),
            lost_after_s=lost_after_s,
        ))
        self.push_model(RequestDynamicMetadataFrame())

    def reject(self, reason_code: str) -> None:
        self.push_model(ConnectionRejectedFrame(reason_code=reason_code, reason=REJECTIONS[reason_code]))
        self.close(CLOSE_REVOKED)

    # --- frames -----------------------------------------------------------------------------

    async def on_frame(self, raw: dict[str, Any]) -> None:
        if not self.opened:
            self.refuse("not connected as a worker", raw)
            return
        await self._heard()
        kind = raw.get("type")
        if kind not in WORKER_FRAME_TYPES:
            shown = kind[:64] if isinstance(kind, str) else type(kind).__name__
            self.refuse(f"unsupported frame type {shown!r}: one of {', '.join(WORKER_FRAME_TYPES)}", raw)
            return
        try:
            frame = worker_frame.validate_python(raw)
        except ValidationError as exc:
            self.refuse(f"invalid {kind} frame: {describe(exc)}", raw)
            return
        if isinstance(frame, MetadataFrame):
            await self._metadata(frame, raw)
        elif isinstance(frame, CompletedFrame):
            await self._completed(frame, raw)
        elif isinstance(frame, StartedFrame):
            await self._started(frame, raw)
        elif isinstance(frame, ProgressFrame):
            self._progress(frame, raw)
        else:
            assert isinstance(frame, HeartbeatFrame)

    async def _heard(self) -> None:
        self.heard_at = timezone.now()
        now = asyncio.get_running_loop().time()
        if sessions.seen_write_due(self.seen_written, now, settings.WORKER_LOST_AFTER_S):
            self.seen_written = now
            await database_sync_to_async(mark_seen)(self.worker_id, self.heard_at)

    async def _metadata(self, frame: MetadataFrame, raw: dict[str, Any]) -> None:
        try:
            await database_sync_to_async(report_metadata)(self.worker_id, frame.metadata)
        except InvalidMetadata as exc:
            self.refuse(str(exc), raw)
            return
        self.ready = True
        self.offer()

    async def _started(self, frame: StartedFrame, raw: dict[str, Any]) -> None:
        request_id = frame.work_request_id
        if request_id in self.running:
            return  # given on this connection and neither finished nor aborted since, as far as we heard
        try:
            await database_sync_to_async(reports.own_running)(self.worker_id, request_id)
        except reports.NotRunning as exc:
            if exc.status == Status.ABORTED:
                self.abort(request_id, told_anyway=True)
            else:
                self.refuse(str(exc), raw, request_id)
        except reports.NotAssigned as exc:
            self.refuse(str(exc), raw, request_id)
        else:  # running here, given to an earlier connection: ended when this one opened, so not its run
            self.refuse(f"work request {request_id} was not given on this connection", raw, request_id)

    def _progress(self, frame: ProgressFrame, raw: dict[str, Any]) -> None:
        if frame.work_request_id not in self.running:
            self.refuse(f"work request {frame.work_request_id} is not running on this connection", raw,
                        frame.work_request_id)

    async def _completed(self, frame: CompletedFrame, raw: dict[str, Any]) -> None:
        request_id = frame.work_request_id
        try:
            await database_sync_to_async(reports.complete_own)(
                self.worker_id, request_id, frame.result, frame.output_data,
                attempt=frame.attempt if frame.attempt is not None else self.running.get(request_id, 0),
            )
        except InvalidTaskData as exc:
            self.refuse(f"{exc}; the request is still running: report it again", raw, request_id)
            return
        except reports.NotRunning as exc:
            self.refuse(str(exc), raw, request_id)
            if exc.status == Status.RUNNING:
                return  # still this connection's, as another run than the report named: keep it
        except reports.NotAssigned as exc:
            self.refuse(f"{exc}; nothing was recorded", raw, request_id)
        except Exception:
            # Whether the completion was recorded is unknown (the database failed before or after
            # its commit): end the session, which returns the request if it is still running here,
            # rather than leave it running with nobody at it.
            logger.exception("recording a completion of worker %s failed: closing its session", self.worker_name)
            self.fail()
            return
        if self.running.pop(request_id, None) is not None:  # the worker is done with it, whatever was recorded
            self.offer()

    def refuse(self, reason: str, raw: dict[str, Any] | None, request_id: int | None = None) -> None:
        TALLY.error(reason)
        if request_id is None:  # left out rather than null: frames carry only the fields given
            self.push_model(WorkerErrorFrame(error=reason))
        else:
            self.push_model(WorkerErrorFrame(error=reason, work_request_id=request_id))

    # --- fleet.Link: offers, aborts, replacement --------------------------------------------

    def idle(self) -> bool:
        # Searching counts as idle: a notice arriving meanwhile makes it search once more (the
        # running search may have read the queue before that work was committed).
        return self.ready and not self.closing and len(self.running) < self.concurrency

    def offer(self, done: Searched | None = None) -> bool:
        if not self.ready or self.closing:
            return False
        if done is not None:
            self.on_searched.append(done)
        if self.searching is not None:
            self.search_again = True
            return True
        self.searching = asyncio.get_running_loop().create_task(self._search())
        self.searching.add_done_callback(self._search_done)
        return True

    async def _search(self) -> None:
        """Take requests for this worker while it has free slots and there are any."""
        self.search_again = False
        self.signature = None
        session = sessions.socket_session(self.connected_at)
        while not self.closing and len(self.running) < self.concurrency:
            # Set by each search that ran: a round of offers (fleet.py) skips other connections by
            # the signature of one that found nothing, never by one left from an earlier search.
            self.signature = None
            if self.outbound is not None and not self.outbound.has_room(1, settings.WORK_REQUEST_DATA_MAX_BYTES):
                # A worker this far behind in reading is given nothing it might not read: it either
                # catches up (the worker check offers again) or overflows and is closed.
                return
            found = await database_sync_to_async(search)(self.worker_id, session=session)
            self.signature, request = found.signature, found.request
            if request is None:
                if not self.search_again:
                    return
                self.search_again = False
                continue
            self.running[request.pk] = request.attempts
            self.found = True
            if request.worker is not None:
                self.concurrency = request.worker.concurrency
            if self.closing:
                return  # assigned as the worker left: ending the session returns it
            self.push_model(WorkRequestAvailableFrame(work_request=work_request_payload(request)))

    def _search_done(self, task: asyncio.Task[None]) -> None:
        self.searching = None
        if not task.cancelled() and task.exception() is not None:
            # An assignment may have committed without this connection knowing it: end the session,
            # which returns whatever it runs, rather than leave a request running with nobody at it.
            logger.error("looking for work for worker %s failed: closing its session", self.worker_name,
                         exc_info=task.exception())
            self.fail()
        elif self.search_again and not self.closing and self.offer():
            return  # whoever waits for this search hears when that one ends
        # Always told, whatever ended the search: a round of offers (fleet.py) waits for it.
        waiting, self.on_searched = self.on_searched, []
        found, self.found = self.found, False
        for done in waiting:
            done(self, found)

    def abort(self, request_id: int, *, told_anyway: bool = False) -> None:
        if request_id in self.running or told_anyway:
            self.running.pop(request_id, None)
            self.push_model(AbortedFrame(work_request_id=request_id))
            self.offer()

    def replaced(self) -> None:
        if self.closing:
            return
        self.refuse("this connection's session ended elsewhere (the worker connected again, or another server took "
                    "it for lost); closing it", None)
        self.close(CLOSE_NAME_TAKEN)
        self._end_session()

    def fail(self) -> None:
        """The server failed on this connection: close it (1011) and end its session."""
        if self.closing:
            return
        self.refuse("internal error (for example the database is unreachable); connect again", None)
        self.close(CLOSE_INTERNAL_ERROR)
        self._end_session()

    def lost(self) -> None:
        """Silent for WORKER_LOST_AFTER_S: close, and return its requests now (a dead peer may take
        long to let the socket close)."""
        if self.closing:
            return
        logger.warning("worker %s silent for %g s: lost", self.worker_name, settings.WORKER_LOST_AFTER_S)
        self.refuse(f"silent for {settings.WORKER_LOST_AFTER_S:g} s: lost; its requests go to other workers", None)
        self.close(CLOSE_TOO_SLOW)
        self._end_session()

    def revoke(self, reason: str) -> None:
        if self.closing:
            return
        if self.outbound is not None:
            self.outbound.discard()
        self.reject(TOKEN_DISABLED)
        self._end_session()

    # --- leaving ----------------------------------------------------------------------------

    def _end_session(self) -> None:
        if self.ending is None and self.opened:
            self.ending = asyncio.get_running_loop().create_task(self._close_session())

    async def _close_session(self) -> None:
        if self.runtime is not None:
            self.runtime.fleet.discard(self)
        if self.searching is not None:
            # An assignment in flight commits before we return what this session ran (``wait``
            # raises nothing, whether the search failed or was cancelled).
            await asyncio.wait({self.searching})
        released = await database_sync_to_async(sessions.close_session)(self.worker_id, self.connected_at)
        if released:  # None: a newer session took over
            logger.info("worker %s left: %d requests returned", self.worker_name, len(released))

    async def on_disconnect(self) -> None:
        self._end_session()
        if self.ending is not None:
            await asyncio.shield(self.ending)

    def __repr__(self) -> str:
        return f"<WorkerConsumer {self.worker_name or '?'} since {self.connected_at:%H:%M:%S}>"
