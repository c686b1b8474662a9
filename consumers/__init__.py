"""Websocket consumers: frames in and out as pydantic models; the work is done by ``app``."""
