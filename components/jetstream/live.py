"""The server's state of a stream and of a consumer, as typed values parsed once from an API reply.

`LiveStream.from_info` and `LiveConsumer.from_info` are the only readers of the
`state`, `num_pending`, `ack_floor`... fields of a JetStream info reply; the
program (the plan), the CLI, the phase gate, the probe and the service binding
read these values instead. A durable's work left to do is `unprocessed`
(pending + awaiting ack), defined here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from components.spec.subjects import subjects_overlap


def consumer_filters(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The subjects a consumer config filters on (`filter_subjects`, else `filter_subject`); empty: no filter,
    the consumer reads its whole stream."""
    filters = config.get("filter_subjects") or ([config["filter_subject"]] if config.get("filter_subject") else [])
    return tuple(filters)


@dataclass(frozen=True)
class LiveConsumer:
    """One consumer as the server reports it."""

    pending: int = 0
    ack_pending: int = 0
    name: str = ""
    #: Its configured filter(s); empty: it reads the whole stream.
    filters: tuple[str, ...] = ()
    redelivered: int = 0
    waiting: int = 0
    delivered_stream_seq: int = 0
    delivered_consumer_seq: int = 0
    ack_floor_stream_seq: int = 0
    ack_floor_consumer_seq: int = 0
    #: A push consumer (deliver_subject set): a pull worker cannot bind it.
    push: bool = False
    max_deliver: int = -1
    #: The consumer's config as the server reports it.
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> LiveConsumer:
        """Parse a CONSUMER.INFO (or CONSUMER.LIST entry) reply."""
        config = info.get("config") or {}
        delivered, floor = info.get("delivered") or {}, info.get("ack_floor") or {}
        return cls(
            pending=int(info.get("num_pending") or 0),
            ack_pending=int(info.get("num_ack_pending") or 0),
            name=str(info.get("name") or config.get("durable_name") or ""),
            filters=consumer_filters(config),
            redelivered=int(info.get("num_redelivered") or 0),
            waiting=int(info.get("num_waiting") or 0),
            delivered_stream_seq=int(delivered.get("stream_seq") or 0),
            delivered_consumer_seq=int(delivered.get("consumer_seq") or 0),
            ack_floor_stream_seq=int(floor.get("stream_seq") or 0),
            ack_floor_consumer_seq=int(floor.get("consumer_seq") or 0),
            push=bool(config.get("deliver_subject")),
            max_deliver=int(config.get("max_deliver") or -1),
            config=dict(config),
        )

    @property
    def unprocessed(self) -> int:
        """Messages this consumer still has to get processed: pending plus delivered but not yet acknowledged."""
        return self.pending + self.ack_pending

    def reading(self, stream_subjects: Sequence[str]) -> tuple[str, ...]:
        """The subjects it receives: its filters, else (no filter) every subject of its stream."""
        return self.filters or tuple(stream_subjects)

    def reads(self, subject: str, stream_subjects: Sequence[str]) -> bool:
        """True when this consumer receives messages on `subject`."""
        return any(subjects_overlap(subject, f) for f in self.reading(stream_subjects))


@dataclass(frozen=True)
class LiveStream:
    """One stream as the server reports it, with its consumers by name."""

    name: str
    #: The subjects it really owns (the retired marker means none; see `components.spec.stream`).
    subjects: tuple[str, ...] = ()
    messages: int = 0
    last_seq: int = 0
    consumers: dict[str, LiveConsumer] = field(default_factory=dict)
    #: subject -> this stream's last sequence when it claimed the subject (stream metadata)
    claimed: dict[str, int] = field(default_factory=dict)
    #: subject -> this stream's last sequence when the tool released the subject
    released: dict[str, int] = field(default_factory=dict)
    #: durable -> (first seq, count) of messages under its filter stored here after the
    #: subject was released, that no durable on this stream will deliver
    stranded: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: durable -> how far it had acknowledged when the tool removed it from this stream
    drained: dict[str, int] = field(default_factory=dict)
    first_seq: int = 0
    bytes: int = 0
    consumer_count: int = 0
    #: The stream's config as the server reports it.
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_info(cls, info: Mapping[str, Any], consumers: Iterable[Mapping[str, Any]] = ()) -> LiveStream:
        """Parse a STREAM.INFO reply, and the CONSUMER.LIST entries of its consumers when given."""
        # The stream's own metadata rules (retired marker, recorded positions) live with its spec.
        from components.spec.stream import CLAIMED, DRAINED, RELEASED, recorded, stored_subjects

        config, state = dict(info.get("config") or {}), info.get("state") or {}
        parsed = (LiveConsumer.from_info(c) for c in consumers)
        return cls(
            name=str(config.get("name") or ""),
            subjects=tuple(stored_subjects(config)),
            messages=int(state.get("messages") or 0),
            last_seq=int(state.get("last_seq") or 0),
            consumers={c.name: c for c in parsed},
            claimed=recorded(config, CLAIMED),
            released=recorded(config, RELEASED),
            drained=recorded(config, DRAINED),
            first_seq=int(state.get("first_seq") or 0),
            bytes=int(state.get("bytes") or 0),
            consumer_count=int(state.get("consumer_count") or 0),
            config=config,
        )

    def owns_any(self, pattern: str) -> bool:
        return any(subjects_overlap(pattern, s) for s in self.subjects)

    def claim_position(self, pattern: str) -> int:
        """Where a new durable for `pattern` starts (0: the beginning): after the last message
        stored before this stream claimed the subjects covering it. A covering subject it
        has owned since it was created (no claim recorded) means the beginning."""
        covering = [s for s in self.subjects if subjects_overlap(pattern, s)]
        if not covering or any(s not in self.claimed for s in covering):
            return 0
        return min(self.claimed[s] for s in covering)


#: Existing managed streams by name.
LiveView = dict[str, LiveStream]
