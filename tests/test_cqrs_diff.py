"""django-cqrs's streaming diffs on the test apps: ``cqrs_diff_master | cqrs_diff_replica |
cqrs_diff_sync`` and the deleted-rows diffs, in-process and as a pipeline of processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.management import CommandError
from django.test import override_settings

from app.cqrs import apply as cqrs_apply
from app.cqrs.payload import TransportPayload
from tests.apps.cqrs_master import models as master
from tests.apps.cqrs_replica import models as replica
from tests.cqrs_commands import (
    AMQP,
    ROOT,
    apply_outbox,
    authors,
    ids_filter,
    run,
    sync_events,
    synced_pks,
)
from tests.outbox import clear_outbox


@pytest.fixture(autouse=True)
def _clean_outbox(_db_access: None) -> Iterator[None]:
    clear_outbox()
    yield


# --- diffs ------------------------------------------------------------------------------------------


def diverged() -> tuple[list[master.Author], str]:
    """Master rows: one in step on the replica, one missing there, one at another revision."""
    same, missing, behind = authors(3)
    behind.name = "newer"
    behind.save()
    for row, revision in ((same, 0), (behind, 0)):
        row.refresh_from_db()
        data = {**row.to_cqrs_dict(), "cqrs_revision": revision, "name": "older" if row is behind else row.name}
        cqrs_apply.apply(TransportPayload.model_validate({
            "signal_type": "SYNC", "cqrs_id": "test_author", "instance_pk": row.pk, "instance_data": data}))
    replica.Author.objects.filter(pk=missing.pk).delete()
    clear_outbox()
    return [same, missing, behind], ids_filter([same, missing, behind])


def test_diff_master_prints_header_and_revisions() -> None:
    """cqrs_diff_master: '<cqrs_id>,<now>' then [[pk, revision], ...] per batch."""
    rows, where = diverged()
    out, _ = run("cqrs_diff_master", "-cid", "test_author", "-f", where, "-b", "2")
    header, *packages = out.splitlines()
    assert header.startswith("test_author,20")
    assert [json.loads(p) for p in packages] == [[[rows[0].pk, 0], [rows[1].pk, 0]], [[rows[2].pk, 1]]]


def test_diff_finds_and_sync_repairs_divergence() -> None:
    """diff_master | diff_replica names the missing and outdated rows; diff_sync's SYNCs repair them."""
    rows, where = diverged()
    master_out, _ = run("cqrs_diff_master", "-cid", "test_author", "-f", where)
    replica_out, err = run("cqrs_diff_replica", stdin=master_out)
    header, *lines = replica_out.splitlines()
    assert header == master_out.splitlines()[0] + ",None"
    assert sorted(pk for line in lines for pk in json.loads(line)) == sorted([rows[1].pk, rows[2].pk])
    assert err.startswith("PK to resync: ")
    sync_out, _ = run("cqrs_diff_sync", stdin=replica_out)
    assert "2 instance(s) synced." in sync_out and synced_pks() == sorted([rows[1].pk, rows[2].pk])
    apply_outbox()
    again, _ = run("cqrs_diff_replica", stdin=run("cqrs_diff_master", "-cid", "test_author", "-f", where)[0])
    assert len(again.splitlines()) == 1
    assert replica.Author.objects.get(pk=rows[2].pk).name == "newer"


def test_diff_sync_routes_to_the_replicas_queue() -> None:
    """diff_replica names its CQRS_QUEUE in the header; diff_sync sends the SYNCs to that queue alone."""
    _, where = diverged()
    master_out, _ = run("cqrs_diff_master", "-cid", "test_author", "-f", where)
    with override_settings(CQRS_QUEUE="reports"):
        replica_out, _ = run("cqrs_diff_replica", stdin=master_out)
    assert replica_out.splitlines()[0].endswith(",reports")
    with override_settings(OUTBOX_TARGET="rabbitmq", AMQP_URL=AMQP):
        run("cqrs_diff_sync", "-b", "1", stdin=replica_out)
    assert [row.destination for row, _ in sync_events()] == ["cqrs.reports.test_author"] * 2


def test_deleted_diff_removes_rows_the_master_lost() -> None:
    """deleted_diff_replica | deleted_diff_master | deleted_sync_replica deletes the replica's extra row."""
    kept, gone = authors(2)
    for row in (kept, gone):
        cqrs_apply.apply(TransportPayload.model_validate({
            "signal_type": "SYNC", "cqrs_id": "test_author", "instance_pk": row.pk,
            "instance_data": row.to_cqrs_dict()}))
    where, gone_pk = ids_filter([kept, gone]), gone.pk
    gone.delete()  # its DELETE is never applied: the replica keeps the row
    replica_out, _ = run("cqrs_deleted_diff_replica", "-cid", "test_author", "-f", where)
    master_out, err = run("cqrs_deleted_diff_master", stdin=replica_out)
    assert master_out.splitlines()[1:] == [json.dumps([gone_pk])] and err == f"PK to delete: [{gone_pk}]\n"
    run("cqrs_deleted_sync_replica", stdin=master_out)
    assert list(replica.Author.objects.filter(pk__in=[kept.pk, gone_pk]).values_list("pk", flat=True)) == [kept.pk]


@pytest.mark.parametrize(("command", "stdin", "message"), [
    ("cqrs_diff_replica", "nope,2025-01-01\n[]\n", "Wrong CQRS ID: nope!"),
    ("cqrs_diff_replica", "test_event,2025-01-01\n", "CQRS ID test_event has no rows here"),
    ("cqrs_diff_replica", "test_author,2025-01-01\n{oops\n", "Bad diff line: '{oops'!"),
    ("cqrs_diff_sync", "test_person,now,None\n[1]\n", "Wrong CQRS ID: test_person!"),
    ("cqrs_diff_sync", "test_author,now,None\n{}\n", "Bad diff line: '{}'!"),
    ("cqrs_deleted_diff_master", "nope,now\n", "Wrong CQRS ID: nope!"),
    ("cqrs_deleted_sync_replica", "nope,now\n", "Wrong CQRS ID: nope!"),
])
def test_diff_bad_streams_are_refused(command: str, stdin: str, message: str) -> None:
    """A stream for an unknown model, or a line that is not the protocol's, is a CommandError."""
    with pytest.raises(CommandError) as caught:
        run(command, stdin=stdin)
    assert message in str(caught.value)


def test_diff_master_bad_options_are_refused() -> None:
    """diff_master refuses an unknown CQRS_ID and a bad filter; an empty match is said on stderr."""
    with pytest.raises(CommandError, match="Wrong CQRS ID: nope!"):
        run("cqrs_diff_master", "-cid", "nope")
    with pytest.raises(CommandError, match="Bad filter kwargs!"):
        run("cqrs_diff_master", "-cid", "test_author", "-f", "3")
    out, err = run("cqrs_diff_master", "-cid", "test_author", "-f", '{"id": -1}')
    assert (out, err) == ("", "No objects found for filter!\n")


def test_diff_pipeline_of_processes_repairs_divergence() -> None:
    """The shell pipeline diff_master | diff_replica | diff_sync emits the SYNCs for the diverged rows."""
    rows, where = diverged()
    manage = f"{sys.executable} {ROOT / 'manage.py'}"
    pipeline = (f"{manage} cqrs_diff_master -cid test_author -f '{where}' | {manage} cqrs_diff_replica"
                f" | {manage} cqrs_diff_sync")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Done!\n2 instance(s) synced.\n2 instance(s) processed.\n"
    assert synced_pks() == sorted([rows[1].pk, rows[2].pk])
