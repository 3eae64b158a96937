"""Which stream owns which subjects in each phase, and what a move must keep to lose nothing.

Two pure functions, tested as tables:

* `phase_topology(config)`: phase in; streams with their subjects and durable
  consumers with their streams out, as the stack's topology table declares them
  (components.spec.table). This is the whole migration plan.
* `plan(topology, config, live)`: the topology adjusted to what the live server
  holds right now (`live`, a snapshot read at program time), so that a phase
  move never deletes unconsumed data:
    - a stream that leaves the topology but still has unprocessed messages, or
      holds messages the stack has not allowed to lose, is kept, owning no
      subjects, and the preview says why;
    - a durable that leaves a stream while it still has pending or
      unacknowledged messages is kept there until it drains;
    - a durable created on a stream that is about to gain its subjects starts
      after the stream's last message, so old, already-processed history is
      not replayed; on a stream that already claimed them (a deploy that died
      before the durable was created) it starts after the position the claim
      recorded; on a new stream, or one that has owned the subjects since it was
      created, it starts from the beginning: never skip what nobody consumed;
    - messages under a durable's filter stored in a stream with no durable for
      them (the subject came back outside a hand-over) get a draining durable
      there, starting at the first of them;
    - a stream that loses subjects waits for the stream gaining them, whose
      provider hands them over in two back-to-back API calls; a stream that
      releases a wider subject than it loses keeps the rest of this phase's
      subjects under it in the same call (`keeps`), so they never lack a stream;
    - with the live owner of each subject (`owners`), a subject no stream owns,
      or one taken outside a hand-over, is a warning, and its stream claims it
      again (`reclaim`), before any other stream when it had no owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from components.jetstream.errors import SubjectOverlap
from components.jetstream.live import LiveConsumer, LiveStream, LiveView  # noqa: F401 - re-exported
from components.migration import policy
from components.spec.consumer import ConsumerSpec
from components.spec.stack import StackConfig
from components.spec.stream import StreamSpec
from components.spec.subjects import kept_in_release, split_for_claim, subjects_overlap


@dataclass(frozen=True)
class Topology:
    phase: int
    streams: tuple[StreamSpec, ...]
    consumers: tuple[ConsumerSpec, ...]

    def stream(self, name: str) -> StreamSpec | None:
        return next((s for s in self.streams if s.name == name), None)

    def owner(self, subject: str) -> str | None:
        """The stream whose subjects overlap `subject`, or None."""
        return next((s.name for s in self.streams if any(subjects_overlap(subject, x) for x in s.subjects)), None)


def phase_topology(config: StackConfig) -> Topology:
    """The streams and durables of `config.phase`, as the stack's topology table declares them.

    Pure: no server, no Pulumi. The table's rules were checked when the config was parsed.
    """
    table = config.table
    streams = tuple(spec for s in table.streams if (spec := s.spec(config.phase)) is not None)
    consumers = tuple(d.spec(d.homes[config.phase]) for d in table.durables)
    return Topology(config.phase, streams, consumers)


def bindings(config: StackConfig) -> dict[str, dict[str, object]]:
    """What services bind to, per durable: its stream now, and the ordered candidates."""
    return {d.durable: {"stream": d.homes[config.phase], "candidates": list(d.candidates)}
            for d in config.table.durables}


# -- the plan (the live snapshot is components.jetstream.live) ---------------------------
@dataclass(frozen=True)
class Plan:
    streams: tuple[StreamSpec, ...]
    consumers: tuple[ConsumerSpec, ...]
    #: stream name -> names of streams whose apply must come first (they claim subjects it releases)
    after: dict[str, tuple[str, ...]]
    warnings: tuple[str, ...]
    #: stream name -> subjects it must claim now although its last applied state has them
    #: (no stream owns them, or another stream took them out of band)
    reclaim: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: subjects of the topology that no stream owns on the server right now
    unowned: tuple[str, ...] = ()
    #: claiming stream -> {stream it takes subjects from: subjects that stream keeps as it
    #: releases them} (`keeps`): when a stream narrows (orders.> to orders.us.>), what it
    #: keeps never goes without a stream between the release and its own update
    keeps: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def ordered_streams(self) -> list[StreamSpec]:
        """Streams in an order where everything a stream waits for comes before it."""
        done: list[str] = []
        pending = {s.name: s for s in self.streams}
        while pending:
            ready = [n for n in sorted(pending) if all(d in done or d not in pending for d in self.after.get(n, ()))]
            if not ready:  # cannot happen: plan() never adds a cycle
                ready = sorted(pending)
            for name in ready:
                done.append(name)
                del pending[name]
        by_name = {s.name: s for s in self.streams}
        return [by_name[n] for n in done]


#: The info diagnostic naming the managed streams that held no messages at preview time
#: (preview JSON carries diagnostics but no stack outputs; the preview report reads this).
EMPTY_STREAMS_NOTE = "empty streams on the server: "
#: The same for the durables of the managed streams with nothing pending or unacknowledged
#: ("STREAM/durable"): deleting one of these loses nothing.
DRAINED_DURABLES_NOTE = "drained durables on the server: "

#: The start of the warning for a topology subject that no stream owns (the preview report fails on it).
UNOWNED_WARNING = "subject {subject} has no stream"
#: The start of the warning for a topology subject another managed stream took outside this stack (the report fails on it).
MISOWNED_WARNING = "subject {subject} is owned by "


def ownership(topology: Topology, live: LiveView, owners: dict[str, tuple[str, ...]]) -> tuple[
        list[str], dict[str, set[str]], list[str]]:
    """(warnings, stream -> subjects to reclaim, unowned subjects) of the live ownership.

    `owners` is what the server says owns each topology subject. No owner at all is an
    interrupted hand-over (when the expected stream exists or the tool released the
    subject; otherwise nothing was created yet); an owner other than the expected one is drift when the
    records say so: the tool released the subject from that stream (and never claimed it
    back), or the expected stream claimed it and lost it, or the owner is not managed.
    Otherwise a different owner is simply the move this run makes.
    """
    warnings: list[str] = []
    reclaim: dict[str, set[str]] = {}
    unowned: list[str] = []
    for stream in topology.streams:
        for subject in stream.subjects:
            have = tuple(owners.get(subject, (stream.name,)))
            if have == (stream.name,):
                continue
            if not have:
                # Unowned because nothing was created yet (a first deploy, an adoption) is no fault;
                # a hand-over left it there when its stream exists or the tool released it.
                if stream.name not in live and not any(subject in other.released for other in live.values()):
                    continue
                unowned.append(subject)
                reclaim.setdefault(stream.name, set()).add(subject)
                warnings.append(
                    UNOWNED_WARNING.format(subject=subject) + f" (actual owner: none, expected owner: {stream.name}): "
                    "publishes to it are refused. An interrupted deploy released it; `pulumi up` claims it first"
                )
                continue
            foreign = [o for o in have if o != stream.name and o not in live]
            if foreign:
                # The hand-over takes subjects only from managed streams: say so now, not at apply time.
                raise SubjectOverlap(
                    f"subject {subject} is owned by {', '.join(foreign)}, which this stack does not manage "
                    f"(expected owner: {stream.name})",
                    err_code=10065, stream=stream.name,
                )
            expected = live.get(stream.name)
            drift = [o for o in have if o != stream.name and (
                subject in live[o].released or (expected is not None and subject in expected.claimed))]
            if drift:
                reclaim.setdefault(stream.name, set()).add(subject)
                warnings.append(
                    MISOWNED_WARNING.format(subject=subject) + f"{', '.join(have)} (expected owner: {stream.name}), "
                    f"changed outside this stack: `pulumi up` moves it back to {stream.name}"
                )
    return warnings, reclaim, unowned


def plan(topology: Topology, config: StackConfig, live: LiveView | None,
         owners: dict[str, tuple[str, ...]] | None = None) -> Plan:
    """Adjust `topology` to the live server so the move loses nothing. Pure.

    `owners` (subject -> streams owning it on the server, for the topology's subjects)
    turns on the ownership checks: warnings for unowned or drifted subjects, and
    `reclaim`/ordering so that `pulumi up` claims them before anything else.
    """
    if live is None:
        return Plan(topology.streams, topology.consumers, {}, ())
    warnings: list[str] = []
    streams = list(topology.streams)
    consumers = list(topology.consumers)
    allowed = set(config.allow_data_loss)

    # Streams leaving the topology.
    declared = {s.name for s in streams}
    for settings in config.table.streams:
        current = live.get(settings.name)
        if settings.name in declared or current is None:
            continue
        busy = {d: c.unprocessed for d, c in current.consumers.items() if c.unprocessed}
        if busy:
            detail = ", ".join(f"{d} has {n} unprocessed" for d, n in sorted(busy.items()))
            warnings.append(
                f"stream {settings.name} is not part of phase {topology.phase} but is kept, owning no subjects: "
                f"{detail}. A later `pulumi up` removes it once its consumers have drained"
            )
        elif kept := policy.kept_because(policy.Holding("stream", settings.name, messages=current.messages),
                                         settings.name in allowed):
            warnings.append(
                f"stream {settings.name} is not part of phase {topology.phase} but is kept, owning no subjects: {kept}"
            )
        else:
            continue
        streams.append(settings.idle)
        declared.add(settings.name)

    # Durables leaving a stream while they still have work.
    wanted = {(c.stream, c.durable_name) for c in consumers}
    for durable_settings in config.table.durables:
        for name in sorted(declared):
            current = live.get(name)
            state = current.consumers.get(durable_settings.durable) if current else None
            if (name, durable_settings.durable) in wanted or state is None or not state.unprocessed:
                continue
            consumers.append(durable_settings.spec(name))
            warnings.append(
                f"consumer {durable_settings.durable} on {name} is kept until it drains: {state.pending} pending, "
                f"{state.ack_pending} awaiting ack. Services bound to it keep processing; a later `pulumi up` removes it"
            )

    # Messages under a durable's filter that reached a stream with no durable for them
    # (an out-of-band change, an interrupted deploy): a durable drains them, from the first.
    wanted = {(c.stream, c.durable_name) for c in consumers}
    for durable_settings in config.table.durables:
        for name in sorted(declared):
            current = live.get(name)
            found = current.stranded.get(durable_settings.durable) if current else None
            if not found or (name, durable_settings.durable) in wanted:
                continue
            first, count = found
            spec = durable_settings.spec(name)
            consumers.append(spec.model_copy(update={"deliver_policy": "by_start_sequence", "opt_start_seq": first}))
            warnings.append(
                f"{count} messages under {durable_settings.filter_subject} are stored in {name} from seq {first} on "
                f"with no durable to deliver them (the subject came back to {name} outside a hand-over). `pulumi up` "
                f"creates {durable_settings.durable} on {name} starting there; a later `pulumi up` removes it once drained"
            )

    # New durables start after the history that the stream held before it took their subjects:
    # on a stream about to gain them, after its last message; on one that already claimed
    # them (a deploy that died before the durable was created), after the recorded claim.
    adjusted = []
    for spec in consumers:
        current = live.get(spec.stream)
        if current is not None and spec.durable_name not in current.consumers and spec.deliver_policy == "all":
            if not any(current.owns_any(f) for f in spec.filter_subjects):
                start = current.last_seq + 1
            else:
                start = min(current.claim_position(f) for f in spec.filter_subjects) + 1
            if start > 1:
                spec = spec.model_copy(update={"deliver_policy": "by_start_sequence", "opt_start_seq": start})
        adjusted.append(spec)

    # A stream that loses subjects waits for the stream that claims them.
    after: dict[str, set[str]] = {}
    for stream in streams:
        for subject in stream.subjects:
            for owner in live.values():
                if owner.name != stream.name and owner.name in declared and owner.owns_any(subject):
                    if owner.name not in after.get(stream.name, set()):
                        after.setdefault(owner.name, set()).add(stream.name)
    keeps = {claimer.name: given for claimer in streams if (given := release_keeps(claimer, streams, live, declared))}

    reclaim: dict[str, set[str]] = {}
    unowned: list[str] = []
    if owners is not None:
        notes, reclaim, unowned = ownership(topology, live, owners)
        warnings[:0] = notes
        # Streams that claim unowned subjects go first: every other stream waits for them.
        for claimer in sorted({n for n, subs in reclaim.items() if set(subs) & set(unowned)}):
            for stream in streams:
                if stream.name != claimer and not _reaches(after, claimer, stream.name):
                    after.setdefault(stream.name, set()).add(claimer)
    return Plan(
        tuple(streams),
        tuple(adjusted),
        {k: tuple(sorted(v)) for k, v in after.items()},
        tuple(warnings),
        {k: tuple(sorted(v)) for k, v in reclaim.items()},
        tuple(unowned),
        keeps,
    )


def release_keeps(claimer: StreamSpec, streams: Sequence[StreamSpec], live: LiveView,
                  declared: set[str]) -> dict[str, tuple[str, ...]]:
    """{stream `claimer` takes subjects from: subjects that stream keeps as it releases them}. Pure.

    NATS has no "orders.> except orders.eu.>": a stream that gives up `orders.>` so that
    `orders.eu.>` can move releases it whole. Without more, `orders.us.>`, which this phase
    leaves where it was (or gives to a third stream), would have no stream until the next
    step. So the release keeps, on the releasing stream, each subject of this phase's plan
    (of any stream but the claimer) that a released subject covers and that the claimer
    does not claim: the releasing stream's own update, or the third stream's claim from it,
    follows (`Plan.after`).
    """
    out: dict[str, tuple[str, ...]] = {}
    planned = [s for stream in streams if stream.name != claimer.name for s in stream.subjects]
    for owner in live.values():
        if owner.name == claimer.name or owner.name not in declared:
            continue
        released, kept = split_for_claim(owner.subjects, claimer.subjects)
        if found := kept_in_release(released, kept, claimer.subjects, sorted(planned)):
            out[owner.name] = found
    return out


def _reaches(after: dict[str, set[str]], start: str, target: str) -> bool:
    """True when `start` already waits (directly or not) for `target`: an edge back would cycle."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name == target:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(after.get(name, ()))
    return False
