"""``switchyard-client perf``: a load-test harness in the manner of ``pulsar-perf``, on the client's
public API only."""
