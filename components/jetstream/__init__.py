"""The JetStream layer: one client over nats-py, the error vocabulary, the server's state as typed values.

Depends on nats-py and pydantic only.
"""
