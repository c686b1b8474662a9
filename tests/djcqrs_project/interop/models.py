"""django-cqrs's own models, with the CQRS_IDs of Switchyard's test apps (tests/apps/cqrs_master,
tests/apps/cqrs_replica): masters Switchyard's replica copies, replicas of Switchyard's masters."""

from typing import Any

from dj_cqrs.mixins import MasterMixin, ReplicaMixin
from django.db import models


class Writer(MasterMixin):
    CQRS_ID = "test_author"

    name = models.CharField(max_length=100)


class Review(MasterMixin):
    """Tracked fields, a foreign key among them: Switchyard's replica ``Review`` records the
    previous_data django-cqrs sends."""

    CQRS_ID = "test_review"
    CQRS_TRACKED_FIELDS = ("text", "writer")

    text = models.CharField(max_length=100)
    writer = models.ForeignKey(Writer, on_delete=models.CASCADE)


class AuthorReplica(ReplicaMixin):
    CQRS_ID = "test_author"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)


class Received(models.Model):
    """The previous_data ``BookReplica.cqrs_save`` was called with, one row per call."""

    book_id = models.IntegerField()
    revision = models.IntegerField()
    previous_data = models.JSONField(null=True)


class BookReplica(ReplicaMixin):
    """Switchyard's master ``Book`` tracks its title and author: what arrives as previous_data is recorded."""

    CQRS_ID = "test_book"
    CQRS_MAPPING = {"id": "id", "title": "name"}

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)

    @classmethod
    def cqrs_save(cls, master_data: dict, previous_data: Any = None, sync: bool = False, meta: Any = None) -> Any:
        Received.objects.create(book_id=master_data["id"], revision=master_data["cqrs_revision"],
                                previous_data=previous_data)
        return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)


class CounterReplica(ReplicaMixin):
    """Switchyard's master ``Counter``: few rows, so a test may SYNC all of them."""

    CQRS_ID = "test_counter"

    id = models.IntegerField(primary_key=True)
    views = models.IntegerField()
    price = models.DecimalField(max_digits=8, decimal_places=2)


class Attempt(models.Model):
    """Keys ``EventReplica`` has seen."""

    key = models.CharField(max_length=100, unique=True)


class EventReplica(ReplicaMixin):
    """Fails the first payload of each key (returns nothing: django-cqrs's failure signal), applies
    it after: a dead letter that ``cqrs_dead_letters retry`` brings back is then applied."""

    CQRS_ID = "test_event"

    id = models.IntegerField(primary_key=True)
    key = models.CharField(max_length=100)

    @classmethod
    def cqrs_save(cls, master_data: dict, previous_data: Any = None, sync: bool = False, meta: Any = None) -> Any:
        _, first = Attempt.objects.get_or_create(key=master_data["key"])
        if first:
            return None
        return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)
