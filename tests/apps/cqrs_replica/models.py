"""A user's replica models (tests/test_cqrs_replica.py): plain, mapped, custom serialization,
hooks without database operations, and hooks that keep previous_data (tests/test_cqrs_interop.py)."""

from __future__ import annotations

from typing import Any

from django.db import models

from app.cqrs.replica import ReplicaMixin


class Author(ReplicaMixin):
    """Replicated field for field."""

    CQRS_ID = "test_author"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)


class Book(ReplicaMixin):
    """The master's ``title`` is stored as ``name``; the master's other fields are dropped."""

    CQRS_ID = "test_book"
    CQRS_MAPPING = {"id": "id", "title": "name"}
    CQRS_SELECT_FOR_UPDATE = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)


class Person(ReplicaMixin):
    """Custom serialization: the master sends first and last names, the replica keeps one."""

    CQRS_ID = "test_person"
    CQRS_CUSTOM_SERIALIZATION = True

    id = models.IntegerField(primary_key=True)
    full_name = models.CharField(max_length=200)

    @classmethod
    def cqrs_create(cls, sync: bool, mapped_data: dict[str, Any], previous_data: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Person:
        return cls.objects.create(**cls._fields_from(mapped_data))

    def cqrs_update(self, sync: bool, mapped_data: dict[str, Any], previous_data: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Person:
        for name, value in self._fields_from(mapped_data).items():
            setattr(self, name, value)
        self.save()
        return self

    @staticmethod
    def _fields_from(data: dict[str, Any]) -> dict[str, Any]:
        return {"id": data["id"], "full_name": f"{data['first']} {data['last']}",
                "cqrs_revision": data["cqrs_revision"], "cqrs_updated": data["cqrs_updated"]}


class HookCall(models.Model):
    """What the hooks of ``Event`` were called with."""

    signal = models.CharField(max_length=10)
    key = models.CharField(max_length=100)
    revision = models.IntegerField()
    meta = models.JSONField(null=True)


class Event(ReplicaMixin):
    """No database operations of its own: its hooks record calls, and fail on request (``fail``:
    always; ``fail_once``: the first time for its ``key``)."""

    CQRS_ID = "test_event"
    CQRS_NO_DB_OPERATIONS = True
    CQRS_META = True

    id = models.IntegerField(primary_key=True)

    @classmethod
    def cqrs_save(cls, master_data: dict[str, Any], previous_data: dict[str, Any] | None = None,
                  sync: bool = False, meta: dict[str, Any] | None = None) -> bool:
        if master_data.get("fail"):
            raise RuntimeError(f"hook refused {master_data['key']}")
        if master_data.get("fail_once") and not HookCall.objects.filter(key=master_data["key"], signal="FAILED"):
            # No transaction around these hooks: the record of the failure stays.
            HookCall.objects.create(signal="FAILED", key=master_data["key"], revision=master_data["cqrs_revision"])
            raise RuntimeError(f"hook refused {master_data['key']} once")
        HookCall.objects.create(signal="SYNC" if sync else "SAVE", key=master_data["key"],
                                revision=master_data["cqrs_revision"], meta=meta)
        return True

    @classmethod
    def cqrs_delete(cls, master_data: dict[str, Any], meta: dict[str, Any] | None = None) -> bool:
        HookCall.objects.create(signal="DELETE", key=master_data["key"],
                                revision=master_data["cqrs_revision"], meta=meta)
        return True


class Review(ReplicaMixin):
    """A django-cqrs master's tracked fields: its hooks log each previous_data they are given."""

    CQRS_ID = "test_review"

    id = models.IntegerField(primary_key=True)
    text = models.CharField(max_length=100)
    writer = models.IntegerField()
    previous_data_log = models.JSONField(null=True)

    @classmethod
    def cqrs_create(cls, sync: bool, mapped_data: dict[str, Any], previous_data: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Review:
        created: Review = super().cqrs_create(sync, {**mapped_data, "previous_data_log": [previous_data]})
        return created

    def cqrs_update(self, sync: bool, mapped_data: dict[str, Any], previous_data: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Review:
        log = [*(self.previous_data_log or []), previous_data]
        updated: Review = super().cqrs_update(sync, {**mapped_data, "previous_data_log": log})
        return updated
