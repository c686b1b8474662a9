"""The announcement feed's cursor, the topic directory and the credential cache: plain objects."""

from __future__ import annotations

from app.auth.credentials import Credential, CredentialCache
from app.broker.announcements import START_HOLES, Change, FeedCursor
from app.broker.directory import TopicDirectory
from app.broker.permissions import Rights
from app.broker.policy import StorePolicy
from app.broker.topics import TopicView, ViewCache


def change(id_: int) -> Change:
    return Change(id_, "rights", f"t{id_}", True, False, None, "", "")


def test_cursor_takes_new_rows_in_order():
    """Rows beyond the cursor are taken once, in id order."""
    cursor = FeedCursor(after=10, hole_ttl_s=60)
    assert [c.id for c in cursor.take([change(12), change(11)], now=0)] == [11, 12]
    assert cursor.take([change(11), change(12)], now=0) == []


def test_cursor_takes_late_commit_of_a_skipped_id():
    """An id skipped because its transaction committed late is taken when it appears."""
    cursor = FeedCursor(after=0, hole_ttl_s=60)
    cursor.take([change(1), change(3)], now=0)
    assert 2 in cursor.holes
    assert [c.id for c in cursor.take([change(2)], now=1)] == [2]
    assert not cursor.holes


def test_cursor_forgets_holes_after_ttl():
    """A rolled-back id is not asked for forever."""
    cursor = FeedCursor(after=0, hole_ttl_s=60)
    cursor.take([change(2)], now=0)
    cursor.take([], now=61)
    assert not cursor.holes


def test_cursor_bounds_holes():
    """A huge gap is not tracked id by id."""
    cursor = FeedCursor(after=0, hole_ttl_s=60)
    cursor.take([change(1_000_000)], now=0)
    assert cursor.after == 1_000_000 and not cursor.holes


def test_starting_cursor_watches_ids_below_the_end_not_visible_yet():
    """A starting cursor takes a change that commits late with an id below the feed's end."""
    cursor = FeedCursor.at_end([9, 7, 6], now=0, hole_ttl_s=60)
    assert cursor.after == 9 and set(cursor.holes) == {1, 2, 3, 4, 5, 8}
    assert [c.id for c in cursor.take([change(8), change(10)], now=1)] == [8, 10]
    assert cursor.take([change(8)], now=2) == []


def test_starting_cursor_watches_a_bounded_window():
    """Only the ``START_HOLES`` ids below the end are watched, and for the TTL only."""
    cursor = FeedCursor.at_end([1_000_000], now=0, hole_ttl_s=60)
    assert set(cursor.holes) == set(range(1_000_000 - START_HOLES + 1, 1_000_000))
    cursor.take([], now=61)
    assert not cursor.holes


def test_starting_cursor_on_an_empty_feed():
    """An empty feed (all pruned) starts from the beginning, with nothing to watch."""
    cursor = FeedCursor.at_end([], now=0, hole_ttl_s=60)
    assert cursor.after == 0 and not cursor.holes


def test_directory_answers_only_when_loaded():
    """Before it is loaded every name is looked up; after, unknown names are missing."""
    directory = TopicDirectory()
    assert not directory.missing("x")
    directory.load(["a"])
    assert directory.missing("x") and not directory.missing("a")
    directory.found("x", True)
    directory.found("a", False)
    assert not directory.missing("x") and directory.missing("a")


def test_credentials_expire_and_revoke():
    """A checked token is trusted for the TTL, and dropped at once when revoked."""
    cache = CredentialCache(ttl_s=10)
    cache.put("h1", Credential(object(), 1, "user:1"), now=0, generation=0)
    cache.put("h2", Credential(object(), 2, "user:2"), now=0, generation=0)
    assert cache.get("h1", now=5) is not None
    assert cache.get("h1", now=11) is None
    cache.revoke(None, "user:2")
    assert cache.get("h2", now=1) is None


def test_credentials_revoked_by_token():
    """Revoking a token id drops its entry only."""
    cache = CredentialCache(ttl_s=10)
    cache.put("h1", Credential(object(), 1, "user:1"), now=0, generation=0)
    cache.put("h2", Credential(object(), 2, "user:1"), now=0, generation=0)
    cache.revoke(1, None)
    assert cache.get("h1", now=0) is None and cache.get("h2", now=0) is not None


def test_lookup_overlapping_a_revocation_is_not_cached():
    """A token looked up while a revocation was applied is used once, not cached."""
    cache = CredentialCache(ttl_s=10)
    started = cache.generation
    cache.revoke(7, None)
    cache.put("h", Credential(object(), 7, "user:1"), now=0, generation=started)
    assert cache.get("h", now=0) is None


def view(slug: str, source: str | None = None) -> TopicView:
    return TopicView(1, slug, StorePolicy.CACHE, source is not None, source, True, Rights(True, True, True))


def test_view_cache_drops_topic_and_its_response_topics():
    """A change to a topic drops its views and those of response topics answering it, not others."""
    cache = ViewCache(max_entries=100)
    cache.put(view("s"), "a", expires=10)
    cache.put(view("s_r", source="s"), "a", expires=10)
    cache.put(view("t"), "a", expires=10)
    cache.drop("s")
    assert cache.get("s", "a", now=0) is None and cache.get("s_r", "a", now=0) is None
    assert cache.get("t", "a", now=0) is not None and len(cache) == 1


def test_view_cache_expires_and_is_bounded():
    """Views expire, and the cache starts over beyond its size."""
    cache = ViewCache(max_entries=2)
    cache.put(view("a"), "p", expires=5)
    assert cache.get("a", "p", now=6) is None
    cache.put(view("b"), "p", expires=5)
    cache.put(view("c"), "p", expires=5)
    assert len(cache) <= 2
