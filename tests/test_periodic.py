"""The relays' periodic loop."""

from relays.periodic import MAX_BACKOFF_S, backoff_s


def test_backoff_grows_and_is_capped():
    """Back-off doubles per failure, never exceeds the cap, and is jittered below it."""
    assert 0.5 <= backoff_s(1.0, 1) <= 2.0
    assert backoff_s(1.0, 20) <= MAX_BACKOFF_S
