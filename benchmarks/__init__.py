"""Benchmarks of the hot delivery path against a raw ``websockets`` relay: ``python -m benchmarks.run``."""
