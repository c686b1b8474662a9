"""The broker's message ids (app/broker/identifiers.py): random version-4 UUIDs from pooled random bytes."""

from __future__ import annotations

import os
import uuid

import pytest

from app.broker.identifiers import IDS_PER_READ, new_message_id

pytestmark = pytest.mark.database_agnostic


def test_ids_are_version_4_uuids():
    """Every id is an RFC 4122 version-4 UUID, as uuid.uuid4() makes."""
    ids = [new_message_id() for _ in range(IDS_PER_READ + 1)]
    assert {(i.version, i.variant) for i in ids} == {(4, uuid.RFC_4122)}


def test_ids_do_not_repeat_across_pool_refills():
    """Ten pools' worth of ids are all distinct."""
    count = 10 * IDS_PER_READ
    assert len({new_message_id() for _ in range(count)}) == count


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_hand_out_its_parents_ready_ids():
    """After a fork the child draws fresh bytes: its next ids are not the ones the parent has ready."""
    new_message_id()  # the parent now holds a pool with ids left in it
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids, then leave without running pytest's teardown
        os.close(reader)
        os.write(writer, b"".join(new_message_id().bytes for _ in range(8)))
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = b"".join(new_message_id().bytes for _ in range(8))
    assert len(child) == 8 * 16 and child != parent
