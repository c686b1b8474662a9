"""Master models as a user writes them (tests/test_cqrs_master.py): every field, tracked fields
with a foreign key, and a serializer."""

from __future__ import annotations

from typing import Any

from django.db import models

from app.cqrs.mixins import MasterMixin


class Author(MasterMixin):
    CQRS_ID = "test_author"

    name = models.CharField(max_length=100)
    born = models.DateField(null=True, blank=True)


class Book(MasterMixin):
    CQRS_ID = "test_book"
    CQRS_FIELDS = ("id", "title", "author")
    CQRS_TRACKED_FIELDS = ("title", "author")

    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    pages = models.IntegerField(default=0)


class Shelf(MasterMixin):
    CQRS_ID = "test_shelf"
    CQRS_SERIALIZER = "tests.apps.cqrs_master.serializers.ShelfSerializer"

    label = models.CharField(max_length=50)


class Draft(MasterMixin):
    CQRS_ID = "test_draft"
    CQRS_PRODUCE = False

    text = models.CharField(max_length=50)

    def get_cqrs_meta(self, **kwargs: Any) -> dict[str, Any]:
        return {"never": "sent"}


class Counter(MasterMixin):
    """Saved with expressions (``F("views") + 1``) and holding a Decimal."""

    CQRS_ID = "test_counter"
    CQRS_FIELDS = ("id", "views", "price")
    CQRS_TRACKED_FIELDS = ("views", "hits")

    views = models.IntegerField(default=0)
    hits = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
