"""Helpers of the end-to-end CQRS tests (test_cqrs_replication over RabbitMQ, test_cqrs_topic_replication
over a topic): a master's churn of changes, and each side's authors."""

from __future__ import annotations

from django.db import transaction

from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.protocol import unique


def replica_state(pks: list[int]) -> dict[int, tuple[str, int]]:
    return {row.pk: (row.name, row.cqrs_revision) for row in replica.Author.objects.filter(pk__in=pks)}


def master_state(pks: list[int]) -> dict[int, tuple[str, int]]:
    return {row.pk: (row.name, row.cqrs_revision) for row in master.Author.objects.filter(pk__in=pks)}


def churn(created: int, updated: int, deleted: int) -> list[int]:
    """``created`` + 2 * ``updated`` + ``deleted`` changes on the master, each kind in a transaction of its
    own: authors created, the first ``updated`` of them renamed twice, the last ``deleted`` deleted. Their
    pks, the deleted ones' too."""
    name = unique("bulk")
    with transaction.atomic():
        authors = [master.Author.objects.create(name=f"{name} 0") for _ in range(created)]
    pks = [author.pk for author in authors]
    with transaction.atomic():
        for n, author in enumerate(authors[:updated] * 2):
            author.name = f"{name} {n}"
            author.save()
    with transaction.atomic():
        for author in authors[created - deleted:]:
            author.delete()
    return pks
