"""Any other websocket path: say so, then close with 4404."""

from __future__ import annotations

from typing import Any

from consumers.base import CLOSE_NOT_FOUND, FrameConsumer
from consumers.frames import ErrorFrame


class NotFoundConsumer(FrameConsumer):
    async def on_connect(self) -> None:
        path = self.scope.get("path", "")[:200]
        self.refuse(f"no websocket endpoint at {path}; use /ws/<topic> or /ws/<topic>/<subscription>", None)
        self.close(CLOSE_NOT_FOUND)

    def refuse(self, reason: str, raw: dict[str, Any] | None) -> None:
        self.push_model(ErrorFrame(result=f"error:{reason}", errorMsg=reason))
