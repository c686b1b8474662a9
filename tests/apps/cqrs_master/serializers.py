"""A serializer as CQRS_SERIALIZER takes one: built with the instance, ``.data`` a dict (as DRF's)."""

from __future__ import annotations

from typing import Any


class ShelfSerializer:
    def __init__(self, instance: Any) -> None:
        self.instance = instance

    @property
    def data(self) -> dict[str, Any]:
        return {"id": self.instance.pk, "label": self.instance.label.upper()}
