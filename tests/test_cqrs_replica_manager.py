"""``Model.cqrs`` of replica models: django-cqrs's ``ReplicaManager`` API (app/cqrs/replica_manager.py)."""

from __future__ import annotations

import itertools
import random
from typing import Any

from app.cqrs.replica_manager import ReplicaManager
from tests.apps.cqrs_replica.models import Author, Person

_ids = itertools.count(random.randrange(10**8, 2 * 10**9, 10**6) + 700_000)
UPDATED = "2025-01-02T03:04:05+00:00"


def data(pk: int, revision: int, **fields: Any) -> dict[str, Any]:
    return {"id": pk, "cqrs_revision": revision, "cqrs_updated": UPDATED, **fields}


def stored(pk: int) -> tuple[str, int] | None:
    row = Author.objects.filter(pk=pk).first()
    return None if row is None else (row.name, row.cqrs_revision)


def test_objects_stays_the_default_manager_beside_cqrs() -> None:
    """As with django-cqrs: ``objects`` is the default manager, ``cqrs`` a ReplicaManager."""
    assert Author._default_manager is Author.objects
    assert isinstance(Author.cqrs, ReplicaManager) and Author.cqrs.model is Author


def test_save_instance_creates_then_updates() -> None:
    """save_instance creates from the master's data, then updates with the next revision; it returns the row."""
    pk = next(_ids)
    created = Author.cqrs.save_instance(data(pk, 0, name="Ann"))
    updated = Author.cqrs.save_instance(data(pk, 1, name="Bea", unknown="dropped"))
    assert (created.pk, updated.pk, stored(pk)) == (pk, pk, ("Bea", 1))


def test_save_instance_returns_none_for_data_it_cannot_apply() -> None:
    """Without the sync fields, or without a required field, save_instance creates nothing and returns None."""
    pk = next(_ids)
    assert Author.cqrs.save_instance({"id": pk, "name": "no revision"}) is None
    assert Author.cqrs.save_instance(data(pk, 0)) is None
    assert stored(pk) is None


def test_update_instance_keeps_stale_and_duplicate_revisions_out() -> None:
    """update_instance returns the row unchanged for an older or equal revision; a SYNC applies any."""
    pk = next(_ids)
    row = Author.cqrs.save_instance(data(pk, 2, name="stored"))
    assert Author.cqrs.update_instance(row, data(pk, 1, name="older")) is row
    assert Author.cqrs.update_instance(row, data(pk, 2, name="duplicate")) is row
    assert stored(pk) == ("stored", 2)
    Author.cqrs.update_instance(row, data(pk, 1, name="synced"), sync=True)
    assert stored(pk) == ("synced", 1)


def test_create_instance_goes_through_cqrs_create() -> None:
    """create_instance hands mapped data to the model's cqrs_create (here a custom serialization)."""
    pk = next(_ids)
    person = Person.cqrs.create_instance(data(pk, 0, first="Ada", last="Lovelace"))
    assert Person.objects.get(pk=pk).full_name == person.full_name == "Ada Lovelace"


def test_delete_instance_is_true_even_for_a_missing_row() -> None:
    """delete_instance deletes by the master's id and is True when nothing was there; False without an id."""
    pk = next(_ids)
    Author.cqrs.save_instance(data(pk, 0, name="gone"))
    assert Author.cqrs.delete_instance(data(pk, 1)) is True and stored(pk) is None
    assert Author.cqrs.delete_instance(data(pk, 1)) is True
    assert Author.cqrs.delete_instance({"cqrs_revision": 1, "cqrs_updated": UPDATED}) is False
