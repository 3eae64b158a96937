"""The data-loss policy: nothing that holds messages or a durable's position is destroyed without a named opt-in."""

from __future__ import annotations

from components.jetstream.client import JetStream
from components.jetstream.errors import DataLossRefused


def stream_messages(js: JetStream, name: str) -> int:
    info = js.stream_info(name)
    return int(info["state"]["messages"]) if info else 0


def guard_data_loss(js: JetStream, name: str, allowed: bool, action: str, fields: list[str] | None = None) -> None:
    """Refuse to destroy a stream that holds messages unless the stack allows it by name."""
    if allowed:
        return
    messages = stream_messages(js, name)
    if messages:
        because = f" because {', '.join(fields)} cannot change in place" if fields else ""
        raise DataLossRefused(
            f"stream {name}: {action}{because} would destroy its {messages} stored messages. "
            f"Add {name!r} to the stack's allowDataLoss list to allow it, or keep the old value"
        )


def unprocessed(info: dict | None) -> tuple[int, int]:
    """(num_pending, num_ack_pending) of a consumer info, zeros when absent."""
    if not info:
        return 0, 0
    return int(info.get("num_pending", 0)), int(info.get("num_ack_pending", 0))


def guard_consumer_loss(js: JetStream, spec_id: str, allowed: bool, action: str, fields: list[str] | None = None) -> None:
    stream, durable = spec_id.split("/", 1)
    pending, ack_pending = unprocessed(js.consumer_info(stream, durable))
    if (pending or ack_pending) and not allowed:
        because = f" because {', '.join(fields)} cannot change in place" if fields else ""
        raise DataLossRefused(
            f"consumer {durable} on stream {stream}: {action}{because} would drop its position with "
            f"{pending} messages pending and {ack_pending} awaiting ack. Let it drain first, or add "
            f"'{stream}/{durable}' to the stack's allowDataLoss list"
        )


