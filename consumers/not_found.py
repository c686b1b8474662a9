"""Any other websocket path: say so, then close with 4404."""

from __future__ import annotations

from consumers.base import CLOSE_NOT_FOUND, FrameConsumer


class NotFoundConsumer(FrameConsumer):
    async def on_connect(self) -> None:
        path = self.scope.get("path", "")[:200]
        self.refuse(f"no websocket endpoint at {path}; use /ws/<topic> or /ws/<topic>/<subscription>", None)
        self.close(CLOSE_NOT_FOUND)

