"""Tokens and principals: who is talking to the broker."""
