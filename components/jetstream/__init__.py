"""The JetStream layer: one client over nats-py, the error vocabulary, the server's state as typed values.

Depends on nats-py and pydantic (the service binding installs with these two only). The
live model takes the stream's own rules (the retired marker, the positions this tool
records in stream metadata) from `components.spec.stream` when it parses a stream.
"""
