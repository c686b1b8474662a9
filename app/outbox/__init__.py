"""Transactional outbox: CloudEvents written in the caller's transaction, published by relays."""
