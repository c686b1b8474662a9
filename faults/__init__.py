"""The fault matrix: scenarios against real processes on loopback, each printing one row of what
was acknowledged, delivered, duplicated and lost (``make faults``; ``tests/test_fault_matrix.py`` runs
the quick profile in CI)."""
