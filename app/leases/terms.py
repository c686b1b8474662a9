"""How long a lease holder may act on its lease, by its own clock (no I/O; the caller passes the
event loop's time, in seconds).

The row says the lease expires at the holder's wall clock at the UPDATE plus the term; another
process takes it once its own wall clock passes that. The holder only knows when it *asked*: a
renewal that started at ``t`` and succeeded holds at least until ``t + term``. It stops acting a
safety margin before that, for the clocks of two hosts differing a little. Counting from the start
(not from the answer) is what makes a paused process safe: a renewal answered, then a pause longer
than the lease, and the holder finds its deadline past before it does anything else.
"""

from __future__ import annotations

# The share of the term a holder does not count on. Renewals every third of the term leave a renewal
# about 0.45 of it to be answered before the holder stands by.
SAFETY_MARGIN = 0.2


def lease_deadline(renewal_started: float, term_s: float) -> float:
    """Until when (the caller's clock) a holder whose renewal started at ``renewal_started`` and
    succeeded may act on a lease of ``term_s`` seconds."""
    return renewal_started + term_s * (1 - SAFETY_MARGIN)


def may_act(now: float, deadline: float) -> bool:
    """Whether the holder may still act at ``now`` on a lease held until ``deadline``."""
    return now < deadline
