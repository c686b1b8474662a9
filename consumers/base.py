"""The frame-level consumer every Switchyard socket builds on.

It accepts, parses each text frame once (one codec), and hands a dict to ``on_frame``. Bad frames
get an error frame and the connection stays open. Outgoing frames go through a bounded queue
drained by a task that runs only while frames are waiting, so delivery never waits on a slow peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from http import HTTPStatus
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from pydantic import BaseModel, ValidationError

from app import codec
from app.auth.services import principal_of, still_authenticates
from app.broker.admission import Refusal
from app.broker.runtime import get_runtime
from app.broker.topics import TopicView
from app.server.access_log import Session
from app.server.metrics import TALLY
from consumers.frames import ConsumerAck, ErrorFrame, ProducerAck
from consumers.outbound import Outbound
from consumers.refusals import DATABASE_ERRORS, database_failed, send_refusal

logger = logging.getLogger(__name__)

# Close codes (also in README): the first three are ours, 1009 is uvicorn's for huge frames.
CLOSE_FORBIDDEN = 4403  # may not consume this topic
CLOSE_NOT_FOUND = 4404  # no such websocket endpoint / reserved name
CLOSE_TOO_SLOW = 4408  # the send queue overflowed; unacked stored messages come back on reconnect
CLOSE_INTERNAL_ERROR = 1011  # the server failed on this connection; reconnect
# The server cannot serve it now (its database is unreachable or its disk full); reconnect later.
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_REVOKED = 4401  # the token was disabled or deleted, or the user deactivated
CLOSE_NAME_TAKEN = 4409  # a Pulsar producer's producerName lease was taken over (it could not renew it)

TOO_DEEP = f"frame nests too deeply (more than {codec.MAX_DEPTH} levels)"


def describe(exc: ValidationError) -> str:
    """A short, client-facing summary of what was wrong with a frame."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def context_echo(raw: dict[str, Any] | None) -> dict[str, Any]:
    """The ``context`` field of an ack answering ``raw``: the frame's context as received (a client
    matches acks to requests by it), or nothing when its JSON is over MAX_ECHOED_CONTEXT_BYTES, so
    an ack never sends back more than a little of what a peer (that may not read) sent."""
    if raw is None or "context" not in raw:
        return {}
    context = raw["context"]
    limit: int = settings.MAX_ECHOED_CONTEXT_BYTES
    # Without encoding: a parsed int has at most 20 digits, a character at most 6 bytes of JSON
    # (an escape), and a string's JSON is at least as long as the string.
    if type(context) is int or (isinstance(context, str) and 6 * len(context) + 2 <= limit):
        return {"context": context}
    if isinstance(context, str) and len(context) > limit:
        return {}
    try:
        # Wrapped in a list: one level deeper, as in the ack, which must still be encodable.
        size = len(codec.dumps_bytes([context])) - 2
    except codec.EncodeError:
        return {}
    return {"context": context} if size <= limit else {}


class FrameConsumer(AsyncConsumer):  # type: ignore[misc]
    # The hub delivers to local connections directly, so a connection needs no channel-layer
    # channel of its own (that would put the layer on every frame's path).
    channel_layer_alias = "switchyard.no-layer"
    # The ``kind`` label of this connection in switchyard_connections.
    metrics_kind = "other"

    def __init__(self) -> None:
        self.session: Session | None = None  # the access log's (set on connect)
        self.outbound: Outbound | None = None
        self.user: Any = AnonymousUser()
        self.principal = "anonymous"
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.cleaned = False
        self.max_frame_bytes: int = settings.MAX_FRAME_BYTES
        self.failed_frames = 0
        # Back-pressure: while set, no frame is taken (the socket is not read, so TCP slows the
        # peer) until ``until_released`` returns.
        self.held = False
        # Decided while the handshake was still pending (an eviction): it answers the handshake
        # instead of an accept (or, when it came during the accept, is sent as an error frame).
        self.handshake_refusal: Refusal | None = None
        self.close_code = CLOSE_INTERNAL_ERROR  # set by close()
        # The kind this connection is counted as in switchyard_connections, once accepted.
        self.counted_as = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # channels' AsyncConsumer races the socket against a layer channel with asyncio.wait on
        # every frame; with no layer channel a plain loop does the same for less.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
                if self.held:
                    # Between frames, so the one just handled is not kept while we wait.
                    await self.until_released()
        except StopConsumer:
            pass
        except Exception:
            # A bug or an unreachable database while connecting: close this connection with 1011
            # (the client reconnects), unregister it everywhere, and keep serving the others.
            logger.exception("connection failed")
            await self._cleanup()
            try:
                await send({"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR})
            except Exception:
                logger.debug("could not send the close frame", exc_info=True)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels' stock dispatch closes stale DB connections through a thread hop on every
        # frame; our ORM calls go through database_sync_to_async, which does that itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # --- ASGI websocket events ------------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.user = self.scope.get("user") or AnonymousUser()
        self.principal = principal_of(self.user)
        # The access log's figures for the line at the session's end (None when it is off).
        self.session = self.scope.get("switchyard.session")
        if self.session is not None:
            self.session.principal = self.principal
        self.token_id: int | None = self.scope.get("token_id")
        refusal = await self._decide_handshake()
        if refusal is None:
            get_runtime().sockets.add(self)  # from here on a revocation closes this connection
            refusal = await self._revoked_while_connecting()
        if refusal is None and self.closing:
            refusal = self.handshake_refusal or Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "closed while connecting; "
                                                        "try again")
        if refusal is not None:
            await send_refusal(self.base_send, refusal)
            await self._cleanup()
            raise StopConsumer()
        self.counted_as = self.metrics_kind
        TALLY.connections[self.counted_as] = TALLY.connections.get(self.counted_as, 0) + 1
        try:
            await self.base_send({"type": "websocket.accept"})
        except OSError:
            # The client left during the handshake (ASGI servers raise an OSError subclass on
            # sends to a connection that is gone): nothing to serve and nothing to report.
            logger.debug("the client left during the handshake", exc_info=True)
            await self._cleanup()
            raise StopConsumer() from None
        # The headers were read while the handshake was decided (credentials); nothing reads them
        # now. The list is shared by every copy of the scope up the middleware stack: emptied in place.
        self.scope.get("headers", []).clear()
        self.outbound = Outbound(self.base_send, settings.SEND_QUEUE_FRAMES, settings.SEND_QUEUE_BYTES)
        if self.closing:
            # Closed during the accept: now that frames can go, say why and close.
            if self.handshake_refusal is not None:
                reason = self.handshake_refusal.reason
                self.push_model(ErrorFrame(result=f"error:{reason}", errorMsg=reason))
            self.spawn(self._close(self.close_code))
            return
        await self.on_connect()

    async def _revoked_while_connecting(self) -> Refusal | None:
        """A revocation applied after the handshake's credentials were checked, before this connection
        could be found by it (``sockets``), may have been of them: they are checked again."""
        checked_at = self.scope.get("credentials_generation")
        if checked_at is None or checked_at == get_runtime().credentials.generation:
            return None
        try:
            valid = await database_sync_to_async(still_authenticates)(self.token_id, self.user.pk)
        except DATABASE_ERRORS as exc:
            return database_failed(exc)
        return None if valid else Refusal(HTTPStatus.UNAUTHORIZED, "credentials revoked while connecting")

    async def _decide_handshake(self) -> Refusal | None:
        try:
            return await self.before_accept()
        except DATABASE_ERRORS as exc:
            return database_failed(exc)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        TALLY.frames_in += 1
        if self.session is not None:
            self.session.frames_in += 1
        text = message.get("text")
        if text is None:
            self.refuse("binary frames are not supported; send JSON text", None)
            return
        raw: Any
        try:
            raw = codec.loads(text)
        except codec.DecodeError as exc:
            # orjson reads 1024 levels at most: a deeper frame is refused for its depth, as shallower
            # deep ones are, but without its context (nothing of it could be read).
            self.refuse(TOO_DEEP if codec.too_deep_to_parse(exc) else "frame is not valid JSON", None)
            return
        if not isinstance(raw, dict):
            self.refuse("frame must be a JSON object", None)
            return
        limit = self.max_frame_bytes
        if len(text) > limit // 4 and len(text.encode()) > limit:
            self.refuse(f"frame is larger than {limit} bytes", raw)
            return
        if codec.nests_too_deeply(text, raw):
            self.refuse(TOO_DEEP, raw)
            return
        try:
            await self.on_frame(raw)
        except Exception:
            # One traceback per connection: a client repeating a frame that trips a bug (or
            # sending while the database is down) must not flood the log.
            self.failed_frames += 1
            level = logging.ERROR if self.failed_frames == 1 else logging.DEBUG
            logger.log(level, "handling a frame failed (%d on this connection)", self.failed_frames, exc_info=True)
            self.refuse("internal error (for example the database is unreachable); try again", raw)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.session is not None and self.session.close_code is None:
            self.session.close_code = message.get("code", 1005)
        await self._cleanup()
        raise StopConsumer()

    async def _cleanup(self) -> None:
        """Unregister and stop everything this connection owns; runs once."""
        if self.cleaned:
            return
        self.cleaned = self.closing = True
        get_runtime().sockets.discard(self)
        if self.counted_as:
            TALLY.connections[self.counted_as] -= 1
        try:
            await self.on_disconnect()
        except Exception:
            logger.exception("disconnect handling failed")
        finally:
            for task in list(self.tasks):
                task.cancel()
            for task in list(self.tasks):
                # A failure is logged once, by _task_done.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
            if self.outbound is not None:
                await self.outbound.abort()

    # --- hooks ----------------------------------------------------------------------------

    async def before_accept(self) -> Refusal | None:
        """Called before the handshake is answered: a refusal answers it with that HTTP status
        (nothing else of this connection runs), None accepts it."""
        return None

    async def on_connect(self) -> None:
        """Called after accept."""

    async def on_frame(self, raw: dict[str, Any]) -> None:
        """Called with every parsed JSON object."""

    async def on_disconnect(self) -> None:
        """Called once the peer is gone."""

    async def until_released(self) -> None:
        """Called between frames while ``held``: return (and clear it) once frames may be taken."""
        self.held = False

    async def reread_topic(self, slug: str) -> tuple[TopicView | None, bool]:
        """``slug``'s topic and this connection's rights on it, read afresh (a change was announced),
        and whether that worked. When it failed (logged), rights that cannot be read again must not be
        kept, the change may have been a revocation: the caller stops serving and closes with 1011,
        and the client reconnects to be judged afresh."""
        try:
            return await get_runtime().topic_view(slug, self.user, self.principal, fresh=True), True
        except Exception:
            logger.warning("re-reading rights on %s failed; closing the connection", slug, exc_info=True)
            return None, False

    def refuse_control_frame(self, raw: dict[str, Any], note: str = "") -> None:
        """A frame whose ``type`` this endpoint does not take: an error frame, never an ack."""
        kind = raw["type"]
        shown = kind[:64] if isinstance(kind, str) else type(kind).__name__
        self.refuse(f"unsupported control frame type {shown!r}{note}", raw)

    def read_ack(self, raw: dict[str, Any]) -> ConsumerAck | None:
        """``raw`` as a consumer's ack, or None once it was refused (nothing else may be in an ack)."""
        try:
            ack = ConsumerAck.model_validate(raw)
            TALLY.acks += 1
            return ack
        except ValidationError as exc:
            self.refuse(f"invalid ack: {describe(exc)}", raw)
            return None

    def refuse(self, reason: str, raw: dict[str, Any] | None) -> None:
        """Answer a frame that cannot be taken; the connection stays open."""
        TALLY.error(reason)
        self.push_model(ErrorFrame(result=f"error:{reason}", errorMsg=reason))

    # --- sending --------------------------------------------------------------------------

    def revoke(self, reason: str) -> None:
        """The credentials this connection was opened with are no longer valid: say so and close;
        nothing still queued goes out."""
        if self.closing:
            return
        if self.outbound is not None:
            self.outbound.discard()
        self.push_model(ErrorFrame(result=f"error:{reason}", errorMsg=reason))
        self.close(CLOSE_REVOKED)

    def push(self, text: str) -> None:
        if self.outbound is None:
            return  # not accepted (yet): nothing can be sent; a refusal answers the handshake
        TALLY.frames_out += 1
        if not self.outbound.push(text):
            self.too_slow("send queue full")

    def too_slow(self, why: str) -> None:
        """The peer fell too far behind (or does not read): drop what is queued for it and close
        with 4408. Bad behaviour of a client, not of the server: a warning, not an error."""
        if self.closing or self.outbound is None:
            return
        logger.warning("closing %s with %d: %s (%s)", self.principal, CLOSE_TOO_SLOW, why, self.outbound.describe())
        self.outbound.give_up()
        self.close(CLOSE_TOO_SLOW)

    def push_model(self, frame: BaseModel) -> None:
        self.push(codec.dump_model(frame))

    def close(self, code: int) -> None:
        """Close after what is queued (or at once when the queue overflowed)."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        if self.outbound is not None:  # else the handshake is refused, or closed once accepted
            self.spawn(self._close(code))

    async def _close(self, code: int) -> None:
        if self.outbound is not None:
            await self.outbound.close(code)

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task this connection owns (cancelled and awaited on disconnect)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("connection task failed", exc_info=task.exception())


class AckingConsumer(FrameConsumer):
    """Sockets that answer every frame with a producer ack: refusals are acks with ``send-error``."""

    def refuse(self, reason: str, raw: dict[str, Any] | None, message_id: str | None = None) -> None:
        TALLY.error(reason)
        self.push_model(ProducerAck(messageId=message_id or str(uuid.uuid4()), result=f"send-error:{reason}",
                                    errorMsg=reason, **context_echo(raw)))
