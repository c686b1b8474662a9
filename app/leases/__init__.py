"""Leases: at most one process runs a given background loop at a time; another takes over when it dies."""
