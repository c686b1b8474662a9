"""django-cqrs's own models, with the CQRS_IDs of Switchyard's test apps (tests/apps/cqrs_master,
tests/apps/cqrs_replica): a master Switchyard's replica copies, a replica of Switchyard's master."""

from dj_cqrs.mixins import MasterMixin, ReplicaMixin
from django.db import models


class Writer(MasterMixin):
    CQRS_ID = "test_author"

    name = models.CharField(max_length=100)


class AuthorReplica(ReplicaMixin):
    CQRS_ID = "test_author"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)


class BookReplica(ReplicaMixin):
    CQRS_ID = "test_book"
    CQRS_MAPPING = {"id": "id", "title": "name"}

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)
