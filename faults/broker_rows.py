"""Broker rows: messages under a storing policy across server kills, service restarts and consumers
that crash or freeze."""

from __future__ import annotations

from faults.scenario import Scenario

SCENARIOS: tuple[Scenario, ...] = ()
