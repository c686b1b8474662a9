"""The message broker: topics, messages, delivery state, publish / acknowledge / replay."""
