"""The data-loss policy: nothing that holds messages or a durable's position is destroyed without a named opt-in.

One module decides, for a stream or a durable that a step deletes or replaces,
whether the step destroys anything, whether the stack allows it, and the message
that names the opt-in (`allowDataLoss`). Three callers apply it to what each knows:

* the providers, to the live server right before a delete or replace (`guard`);
* the plan, to the snapshot the program read: a stream leaving the topology while it
  holds messages is kept instead (`kept_because`);
* the preview report, to the steps of a preview, where what a resource holds is not
  known unless the program saw a stream empty (`judge`).

Pure, but for `guard`, which reads the live counts through the client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from components.jetstream.errors import DataLossRefused
from components.spec.durations import ns

if TYPE_CHECKING:
    from components.jetstream.client import JetStream
    from components.spec.stream import StreamSpec

#: The stack config key listing the streams and durables ("STREAM/durable") that may lose data.
OPT_IN = "allowDataLoss"

Kind = Literal["stream", "consumer"]
#: The steps that destroy the object they act on.
Op = Literal["delete", "replace"]
DESTRUCTIVE_OPS: tuple[Op, ...] = ("delete", "replace")

#: The allowed verdict when the stack names the object.
OPTED_IN = f"allowed: the stack's {OPT_IN} names it"


def opt_ins(raw: Any) -> tuple[str, ...]:
    """The entries of a raw `allowDataLoss` config value, in order.

    Pulumi passes structured config as JSON text; a value that is not JSON, or a single
    entry rather than a list, still names what it names.
    """
    if raw is None:
        return ()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return (raw,)
    if isinstance(raw, (list, tuple)):
        return tuple(str(v) for v in raw)
    return (str(raw),)


def allowed(name: str, opted: Iterable[str], flagged: bool = False) -> bool:
    """The stack allows `name` (a stream, or "STREAM/durable") to lose data: its resource
    carries the opt-in (`flagged`), or the stack's `allowDataLoss` entries name it."""
    return flagged or name in set(opted)


def unprocessed(info: dict | None) -> tuple[int, int]:
    """(num_pending, num_ack_pending) of a consumer info, zeros when absent."""
    if not info:
        return 0, 0
    return int(info.get("num_pending", 0)), int(info.get("num_ack_pending", 0))


@dataclass(frozen=True)
class Holding:
    """What a stream or a durable holds that destroying it loses; None where it is not known."""

    kind: Kind
    name: str  # a stream's name, or a durable's "STREAM/durable"
    messages: int | None = None  # a stream's stored messages
    pending: int | None = None  # a durable's messages not yet delivered
    ack_pending: int | None = None  # a durable's messages delivered and not yet acknowledged

    @classmethod
    def of_stream(cls, name: str, info: dict | None) -> Holding:
        """From a stream info reply (None: the stream is gone, holding nothing)."""
        return cls("stream", name, messages=int(info["state"]["messages"]) if info else 0)

    @classmethod
    def of_consumer(cls, id_: str, info: dict | None) -> Holding:
        """From a consumer info reply (None: the durable is gone, holding nothing)."""
        pending, ack_pending = unprocessed(info)
        return cls("consumer", id_, pending=pending, ack_pending=ack_pending)

    @property
    def known(self) -> bool:
        counts = (self.messages,) if self.kind == "stream" else (self.pending, self.ack_pending)
        return None not in counts

    @property
    def empty(self) -> bool:
        """Holds nothing, for certain: a count not known is never taken for zero."""
        return self.known and not (self.messages or self.pending or self.ack_pending)


@dataclass(frozen=True)
class Verdict:
    """Whether a destructive step may go ahead, and why; a refusal names the opt-in."""

    allowed: bool
    reason: str


def judge(held: Holding, op: Op, opted: bool, fields: Sequence[str] = ()) -> Verdict:
    """The decision for `op` on what `held` describes, with the stack's opt-in `opted`.

    `fields` are the fields a replace is for (they cannot change in place). Allowed when
    the stack opts in by name, or when the object holds nothing for certain; refused
    otherwise, with a reason that says what would be lost and how to allow it.
    """
    if opted:
        return Verdict(True, OPTED_IN)
    if held.empty:
        nothing = "the program saw it holding no messages" if held.kind == "stream" else (
            "it has nothing pending or awaiting ack")
        return Verdict(True, f"allowed: {nothing}")
    return Verdict(False, _refusal(held, op, fields) if held.known else _refusal_unknown(held, op, fields))


def _refusal(held: Holding, op: Op, fields: Sequence[str]) -> str:
    acting = "deleting it" if op == "delete" else "replacing it"
    because = f" because {', '.join(fields)} cannot change in place" if fields else ""
    if held.kind == "stream":
        return (f"stream {held.name}: {acting}{because} would destroy its {held.messages} stored messages. "
                f"Add {held.name!r} to the stack's {OPT_IN} list to allow it, or keep the old value")
    stream, durable = held.name.split("/", 1)
    return (f"consumer {durable} on stream {stream}: {acting}{because} would drop its position with "
            f"{held.pending} messages pending and {held.ack_pending} awaiting ack. Let it drain first, or add "
            f"'{held.name}' to the stack's {OPT_IN} list")


def _refusal_unknown(held: Holding, op: Op, fields: Sequence[str]) -> str:
    """The refusal when what the object holds is not known (a preview's steps)."""
    name = held.name
    if op == "replace":
        what = "its stored messages" if held.kind == "stream" else "its position and pending messages"
        because = ", ".join(fields) or "a field that cannot change in place"
        return (f"replacing it (because of {because}) destroys {what}. Keep the old value, or add "
                f"'{name}' to {OPT_IN} in the same change")
    if held.kind == "stream":
        return ("deleting it destroys the messages it holds (the program did not see it empty). "
                f"If it must go, add '{name}' to {OPT_IN}")
    durable = name.split("/", 1)[-1]
    return (f"deleting it drops its position (no create of {durable} on another stream in this preview). "
            f"If that is intended, add '{name}' to {OPT_IN}")


def kept_because(held: Holding, opted: bool) -> str | None:
    """Why a stream the topology no longer declares is kept rather than deleted (None: it may go).

    The plan keeps it, owning no subjects, while it holds messages the stack has not
    allowed to lose.
    """
    if judge(held, "delete", opted).allowed:
        return None
    return f"it holds {held.messages} messages. To delete it, add {held.name!r} to {OPT_IN}"


def is_refusal(message: str) -> bool:
    """An error message is one of this policy's refusals (each names the opt-in)."""
    return OPT_IN in message


def _live(js: JetStream, kind: Kind, name: str) -> Holding:
    if kind == "stream":
        return Holding.of_stream(name, js.stream_info(name))
    stream, durable = name.split("/", 1)
    return Holding.of_consumer(name, js.consumer_info(stream, durable))


def guard(js: JetStream, kind: Kind, name: str, opted: bool, op: Op, fields: Sequence[str] = ()) -> None:
    """Raise DataLossRefused if `op` on the live stream or durable `name` would destroy
    what it holds and the stack has not opted in for it by name."""
    if opted:
        return  # no need to read the server
    verdict = judge(_live(js, kind, name), op, opted, fields)
    if not verdict.allowed:
        raise DataLossRefused(verdict.reason)


# -- limits lowered in place ------------------------------------------------------------
#: Stream fields whose in-place change can make the server discard stored messages at once.
TRIMMING_FIELDS = frozenset({"max_msgs", "max_bytes", "max_age", "max_msgs_per_subject", "discard"})


def trimmed(old: StreamSpec, spec: StreamSpec, state: dict, now_ns: int, busiest_subject: int | None = None) -> list[str]:
    """What the server discards from a stream holding `state` when `spec`'s limits replace `old`'s.

    The server (2.15) trims at once to a lower max_msgs or max_bytes when the stream
    discards old messages (with discard new it keeps them), always to a lower
    max_msgs_per_subject, and expires what is older than a lower max_age.
    `busiest_subject` is the most messages one subject holds, when read (None: not known,
    so a per-subject limit below the stream's message count may discard).
    """
    messages, size = int(state.get("messages", 0)), int(state.get("bytes", 0))
    if not messages:
        return []
    found = []
    if spec.discard == "old" and 0 < spec.max_msgs < messages:
        found.append(f"max_msgs {spec.max_msgs} discards {messages - spec.max_msgs} of its {messages} messages")
    if spec.discard == "old" and 0 < spec.max_bytes < size:
        found.append(f"max_bytes {spec.max_bytes} discards its oldest messages (it holds {size} bytes)")
    per_subject = spec.max_msgs_per_subject
    if 0 < per_subject < messages and (busiest_subject is None or busiest_subject > per_subject):
        held = f"a subject holds {busiest_subject}" if busiest_subject else f"it holds {messages} in all"
        found.append(f"max_msgs_per_subject {per_subject} discards the oldest of each subject above it ({held})")
    age = ns(spec.max_age)
    first = state.get("first_ts")
    # Only a shorter max_age: under the old one, the oldest message may be due to expire anyway.
    shorter = age and (not ns(old.max_age) or age < ns(old.max_age))
    if shorter and first and now_ns - _epoch_ns(str(first)) > age:
        found.append(f"max_age {spec.max_age} expires its messages older than that (the oldest is from {first})")
    return found


def _epoch_ns(rfc3339: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(rfc3339).timestamp() * 1e9)


def guard_limits(js: JetStream, old: StreamSpec, spec: StreamSpec, opted: bool) -> None:
    """Raise DataLossRefused if applying `spec` in place of `old` to the live stream discards
    stored messages (a lowered limit) and the stack has not opted in for it by name."""
    if opted:
        return
    info = js.stream_info(spec.name)
    if not info:
        return
    busiest = None
    if 0 < spec.max_msgs_per_subject < int(info["state"].get("messages", 0)):
        reply = js.request(f"$JS.API.STREAM.INFO.{spec.name}", {"subjects_filter": ">"}, stream=spec.name)
        counts = (reply.get("state") or {}).get("subjects") or {}
        complete = len(counts) >= int((reply.get("state") or {}).get("num_subjects", 0))
        top = max(counts.values(), default=0)
        busiest = top if complete or top > spec.max_msgs_per_subject else None
    trims = trimmed(old, spec, info["state"], time.time_ns(), busiest)
    if trims:
        raise DataLossRefused(
            f"stream {spec.name}: updating it would discard stored messages: {'; '.join(trims)}. "
            f"Add {spec.name!r} to the stack's {OPT_IN} list to allow it, or keep the old limits"
        )
