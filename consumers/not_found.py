"""Any other websocket path: on ``/ws/v2/`` an HTTP 404 before accept (the Pulsar API refuses
handshakes with a status, docs/architecture.md 18.2); elsewhere say so, then close with 4404."""

from __future__ import annotations

from http import HTTPStatus

from app.broker.admission import Refusal
from consumers.base import CLOSE_NOT_FOUND, FrameConsumer

PULSAR_PREFIX = "/ws/v2/"


class NotFoundConsumer(FrameConsumer):

    metrics_kind = "not_found"
    def _path(self) -> str:
        return str(self.scope.get("path", ""))[:200]

    async def before_accept(self) -> Refusal | None:
        path = self._path()
        if not path.startswith(PULSAR_PREFIX):
            return None
        return Refusal(HTTPStatus.NOT_FOUND, f"no websocket endpoint at {path}")

    async def on_connect(self) -> None:
        self.refuse(f"no websocket endpoint at {self._path()}; use /ws/<topic> or /ws/<topic>/<subscription>", None)
        self.close(CLOSE_NOT_FOUND)
