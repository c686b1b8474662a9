"""Apache Pulsar's websocket API on the ``/ws/v2/...`` paths (docs/architecture.md section 18)."""
