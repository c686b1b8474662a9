"""Store policy decisions, without a server."""

import pytest

from app.broker.policy import StorePolicy, effective_policy, removed_after_ack


@pytest.mark.parametrize(
    ("policy", "acked", "consumers", "removed"),
    [
        (StorePolicy.CACHE, set(), {"a"}, False),
        (StorePolicy.CACHE, {"b"}, {"a"}, True),
        (StorePolicy.CACHEALL, {"a"}, {"a", "b"}, False),
        (StorePolicy.CACHEALL, {"a", "b"}, {"a", "b"}, True),
        (StorePolicy.CACHEALL, set(), set(), False),
        (StorePolicy.STORE, {"a", "b"}, {"a", "b"}, False),
        (StorePolicy.DISABLED, {"a"}, {"a"}, False),
    ],
)
def test_removed_after_ack(policy, acked, consumers, removed):
    """Each policy removes a message exactly when docs/architecture.md section 5 says."""
    assert removed_after_ack(policy, acked, consumers) is removed


def test_own_policy_wins(settings):
    """A topic's own policy overrides the server default."""
    settings.STORE_SOURCE_MESSAGES = "cache"
    assert effective_policy("store", is_response_topic=False) is StorePolicy.STORE


def test_defaults_by_topic_kind(settings):
    """Source and response topics fall back to their own settings."""
    settings.STORE_SOURCE_MESSAGES = "cacheall"
    settings.STORE_RESPONSE_MESSAGES = "disabled"
    assert effective_policy(None, is_response_topic=False) is StorePolicy.CACHEALL
    assert effective_policy(None, is_response_topic=True) is StorePolicy.DISABLED


@pytest.mark.parametrize(
    ("policy", "acked", "consumers", "waiting", "removed"),
    [
        (StorePolicy.CACHE, {"b"}, {"a"}, set(), True),
        (StorePolicy.CACHE, {"b"}, {"a"}, {7}, False),
        (StorePolicy.CACHE, set(), {"a"}, set(), False),
        (StorePolicy.CACHEALL, {"a", "b"}, {"a", "b"}, {7}, False),
        (StorePolicy.CACHEALL, {"a", "b"}, {"a", "b"}, set(), True),
        (StorePolicy.CACHEALL, {"a"}, {"a", "b"}, set(), False),
        (StorePolicy.STORE, {"a"}, {"a"}, set(), False),
        (StorePolicy.DISABLED, {"a"}, {"a"}, set(), False),
    ],
)
def test_removed_after_ack_with_subscriptions(policy, acked, consumers, waiting, removed):
    """A subscription that existed at publication and has not acked keeps the message (section 18.3)."""
    assert removed_after_ack(policy, acked, consumers, waiting) is removed
