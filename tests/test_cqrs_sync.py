"""django-cqrs's ``cqrs_sync`` command and the admin sync action (on a real server)."""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator

import pytest
from django.core.management import CommandError
from django.test import override_settings

from app.cqrs.sync import SyncReport, sync_rows
from tests.apps.cqrs_master import models as master
from tests.browser import Browser
from tests.cqrs_commands import (
    AMQP,
    authors,
    ids_filter,
    read_terminal,
    run,
    sync_events,
    synced_pks,
    terminal,
)
from tests.outbox import clear_outbox
from tests.protocol import make_user, set_password, unique
from tests.servers import ServerProcess


@pytest.fixture(autouse=True)
def _clean_outbox(_db_access: None) -> Iterator[None]:
    clear_outbox()
    yield


# --- cqrs_sync ---------------------------------------------------------------------------------------


def test_sync_by_filter_emits_a_sync_per_row() -> None:
    """cqrs_sync -cid -f emits a SYNC outbox event for each matching row only, and says so."""
    rows, other = authors(3), authors(1)[0]
    out, _ = run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows))
    assert out == "Done!\n3 instance(s) synced.\n3 instance(s) processed.\n"
    events = sync_events()
    assert sorted(p["instance_pk"] for _, p in events) == sorted(r.pk for r in rows) and other.pk not in synced_pks()
    for row, payload in events:
        assert row.type == "cqrs.test_author.sync" and row.destination == ""
        assert payload["signal_type"] == "SYNC" and payload["instance_data"]["cqrs_revision"] == 0


def test_sync_long_options_and_a_field_filter() -> None:
    """The long option names work, and --filter takes any field lookup."""
    marker = unique("same")
    rows = [master.Author.objects.create(name=marker) for _ in range(2)]
    out, _ = run("cqrs_sync", "--cqrs-id", "test_author", "--filter", json.dumps({"name": marker}), "--batch", "1")
    assert "2 instance(s) synced." in out and synced_pks() == sorted(r.pk for r in rows)


def test_sync_without_filter_syncs_nothing() -> None:
    """As django-cqrs: no --filter matches no rows (-f '{}' is every row)."""
    authors(1)
    out, _ = run("cqrs_sync", "-cid", "test_author")
    assert out == "No objects found for filter!\n" and sync_events() == []


def test_sync_queue_routes_to_the_replica_queue() -> None:
    """--queue sends the SYNCs to cqrs.<queue>.<cqrs_id> alone on RabbitMQ."""
    rows = authors(2)
    with override_settings(OUTBOX_TARGET="rabbitmq", AMQP_URL=AMQP):
        run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows), "-q", "billing")
    assert [row.destination for row, _ in sync_events()] == ["cqrs.billing.test_author"] * 2


def test_sync_failures_are_reported_per_row() -> None:
    """A row whose SYNC cannot be emitted is reported by pk; the others are still counted."""
    rows = authors(2)
    with override_settings(OUTBOX_TARGET="rabbitmq", AMQP_URL=None):
        out, _ = run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows))
    assert out.splitlines() == [
        *[f"Sync record failed for pk={row.pk}: TargetNotConfigured: outbox target 'rabbitmq' is not configured here"
          for row in rows],
        "Done!", "0 instance(s) synced.", "2 instance(s) processed."]
    assert sync_events() == []


def test_sync_rows_goes_in_batches() -> None:
    """sync_rows handles batch_size rows at a time, in primary key order, until all are synced."""
    rows = authors(5)
    seen: list[int] = []

    def batch_done(report: SyncReport) -> None:
        seen.append(report.processed)

    report = sync_rows(master.Author.objects.filter(pk__in=[r.pk for r in rows]), batch_size=2, on_batch=batch_done)
    assert (seen, report.synced, report.failures) == ([2, 4, 5], 5, [])
    assert [p["instance_pk"] for _, p in sync_events()] == [r.pk for r in rows]


def test_sync_of_a_serializer_model() -> None:
    """A CQRS_SERIALIZER model is synced with its serializer's data (which upper-cases the label)."""
    shelf = master.Shelf.objects.create(label=unique("shelf"))
    run("cqrs_sync", "-cid", "test_shelf", "-f", ids_filter([shelf]))
    [(_, payload)] = sync_events()
    assert payload["cqrs_id"] == "test_shelf" and payload["instance_data"]["label"] == shelf.label.upper()


@pytest.mark.parametrize(("args", "message"), [
    (("-cid", "nope", "-f", "{}"), "Wrong CQRS ID: nope!"),
    (("-cid", "test_author", "-f", "{not json"), "Bad filter kwargs!"),
    (("-cid", "test_author", "-f", "[1, 2]"), "Bad filter kwargs!"),
    (("-cid", "test_author", "-f", '{"colour": 1}'), "Bad filter kwargs! Cannot resolve keyword 'colour'"),
    (("-cid", "test_author", "-f", '{"id": "abc"}'), "Bad filter kwargs! Field 'id' expected a number"),
    (("-cid", "test_author", "-f", "{}", "-b", "0"), "Batch size must be positive, not 0!"),
    (("-f", "{}",), "the following arguments are required: --cqrs-id/-cid"),
])
def test_sync_bad_options_are_refused(args: tuple[str, ...], message: str) -> None:
    """Bad options give a CommandError saying what is wrong, and emit nothing."""
    with pytest.raises(CommandError, match=message.replace("[", r"\[").replace("(", r"\(")):
        run("cqrs_sync", *args)
    assert sync_events() == []


def test_sync_progress_on_a_terminal_only() -> None:
    """-p draws the progress line on a terminal; in a pipe the output is the same as without -p."""
    rows = authors(3)
    writer, reader = terminal()
    try:
        run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows), "-b", "2", "-p", stdout=writer)
        shown = read_terminal(reader)
    finally:
        writer.close()
        os.close(reader)
    assert "Processing 3 records with batch size 2" in shown and "3 of 3 processed - 100% with rate" in shown
    assert "Done!" in shown
    piped, _ = run("cqrs_sync", "-cid", "test_author", "-f", ids_filter(rows), "-b", "2", "-p")
    assert piped == "Done!\n3 instance(s) synced.\n3 instance(s) processed.\n"


# --- admin action --------------------------------------------------------------------------------------


def test_admin_action_syncs_the_selected_rows(server: ServerProcess) -> None:
    """The admin's "Synchronize selected authors via CQRS" action emits a SYNC per selected row."""
    rows, other = authors(2), authors(1)[0]
    user = make_user(is_staff=True, is_superuser=True)
    browser = Browser(server.http)
    assert browser.admin_login(user.username, set_password(user)).status == 302
    page = browser.request("/admin/cqrs_master/author/")
    assert page.status == 200 and b"Synchronize selected authors via CQRS" in page.body
    form = [("action", "sync_items"), ("index", "0"), ("select_across", "0"),
            *[("_selected_action", str(row.pk)) for row in rows],
            ("csrfmiddlewaretoken", browser.cookie("csrftoken") or "")]
    answer = browser.request("/admin/cqrs_master/author/", "POST", urllib.parse.urlencode(form).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded",
                              "Referer": browser.base + "/admin/cqrs_master/author/"})
    assert answer.status == 302
    assert synced_pks() == sorted(r.pk for r in rows) and other.pk not in synced_pks()
    assert b"2 successfully synced. 0 failed: []" in browser.request("/admin/cqrs_master/author/").body


def test_admin_action_is_offered_only_to_who_may_change_the_rows() -> None:
    """Staff who may only view a master model's rows are not offered the sync action; with change, they are."""
    from django.contrib.admin import site
    from django.contrib.auth.models import Permission
    from django.test import RequestFactory

    model_admin = site._registry[master.Author]
    user = make_user(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_author", content_type__app_label="cqrs_master"))
    request = RequestFactory().get("/admin/cqrs_master/author/")
    request.user = user
    assert "sync_items" not in model_admin.get_actions(request)
    user.user_permissions.add(Permission.objects.get(codename="change_author", content_type__app_label="cqrs_master"))
    request.user = type(user).objects.get(pk=user.pk)  # a fresh user: permissions are cached
    assert "sync_items" in model_admin.get_actions(request)
