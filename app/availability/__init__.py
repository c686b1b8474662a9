"""Availability of topics: pinged by a relay, answered with pongs; online / offline / unknown."""
