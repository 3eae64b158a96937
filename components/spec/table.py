"""The topology table: the phases, which streams exist in each and own which subjects, where each durable lives.

A stack declares its table under the config key `topology` (examples/ holds two);
without one it is the seeds' table (`SEEDS`). `TopologyConfig` is the table as
written; `resolve()` checks every rule and returns a `Table`, whose declarations
hold the stream and consumer specs of every phase. Pure: pydantic only.

Rules, each failing with the stack key it is about:
- phases are numbered 0, 1, 2, ... without a gap;
- a stream exists in at least one declared phase; names are valid stream names;
- no subject is owned by two streams in one phase;
- a durable has a home stream in every phase, which exists in that phase, and its
  filter matches a subject that stream owns then;
- a durable's candidates (the streams a service tries, in order) name only streams
  of the table and include every home.
A stream's other fields are StreamSpec's, a durable's ConsumerSpec's: a field
added to a spec can be set in the table at once.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.alias_generators import to_camel

from components.spec.consumer import ConsumerSpec
from components.spec.stream import StreamSpec
from components.spec.subjects import name_problem, subjects_overlap

#: StreamSpec fields the table supplies itself: the name is the entry's key, the subjects come per phase.
OWN_STREAM_FIELDS = frozenset({"name", "subjects"})
#: ConsumerSpec fields the table supplies itself: the home stream per phase, the name, the one filter.
OWN_DURABLE_FIELDS = frozenset({"stream", "durable_name", "filter_subjects"})


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class StreamEntryFields(_Entry):
    """The table's own fields of a stream entry (the rest are StreamSpec's)."""

    phases: dict[int, tuple[str, ...]] = Field(description=(
        "phase -> the subjects the stream owns in it; a phase left out: no stream then; []: it exists owning nothing"))
    role: str = Field(default="", description="A label `eventbus stream info` shows, e.g. legacy or dlq")


class DurableEntryFields(_Entry):
    """The table's own fields of a durable entry (the rest are ConsumerSpec's)."""

    filter_subject: str = Field(description="The subjects the durable reads, inside its home stream's in every phase")
    homes: dict[int, str] = Field(description="phase -> the stream the durable lives on")
    candidates: tuple[str, ...] = Field(default=(), description=(
        "The streams a service tries when binding, in order; default: its homes, the latest phase's first"))


def _spec_fields(spec: type[BaseModel], own: frozenset[str]) -> dict[str, Any]:
    return {name: (field.annotation, copy.copy(field)) for name, field in spec.model_fields.items() if name not in own}


if TYPE_CHECKING:
    StreamEntry = StreamEntryFields
    DurableEntry = DurableEntryFields
else:
    StreamEntry = create_model("StreamEntry", __base__=StreamEntryFields, __doc__="One stream of the table.",
                               **_spec_fields(StreamSpec, OWN_STREAM_FIELDS))
    DurableEntry = create_model("DurableEntry", __base__=DurableEntryFields, __doc__="One durable of the table.",
                                **_spec_fields(ConsumerSpec, OWN_DURABLE_FIELDS))


class TopologyConfig(_Entry):
    """The table as a stack writes it (`topology`): phases, streams by name, durables by name."""

    phases: dict[int, str] = Field(description="phase number -> what happens in it, numbered from 0")
    streams: dict[str, StreamEntry] = Field(description="stream name -> its subjects per phase and its settings")
    durables: dict[str, DurableEntry] = Field(default_factory=dict, description=(
        "durable name -> its filter, home stream per phase, candidate order and settings"))


def settings_of(entry: BaseModel, own: type[BaseModel]) -> dict[str, Any]:
    """The spec fields an entry sets (the table's own fields left out), by field name."""
    return entry.model_dump(exclude_unset=True, exclude=set(own.model_fields))


# -- the resolved table -----------------------------------------------------------------------
@dataclass(frozen=True)
class Declared:
    #: The stack key that declares it, for messages: `topology.streams.X` / `topology.durables.d`, or for
    #: the seeds' table the override key (`streams.<role>`, `consumers.<key>`).
    key: str


@dataclass(frozen=True)
class StreamDecl(Declared):
    """One stream of the table: its spec in each phase it exists in, and owning nothing."""

    name: str
    role: str
    specs: Mapping[int, StreamSpec]
    idle: StreamSpec

    def spec(self, phase: int) -> StreamSpec | None:
        return self.specs.get(phase)


@dataclass(frozen=True)
class DurableDecl(Declared):
    """One durable of the table: its home per phase, the candidates services try, its spec."""

    durable: str
    homes: Mapping[int, str]
    candidates: tuple[str, ...]
    filter_subject: str
    template: ConsumerSpec

    def spec(self, stream: str) -> ConsumerSpec:
        """The durable's spec on `stream` (its home, or a stream it is kept on to drain)."""
        return self.template.model_copy(update={"stream": stream})


@dataclass(frozen=True)
class Table:
    phases: Mapping[int, str]
    streams: tuple[StreamDecl, ...]
    durables: tuple[DurableDecl, ...]

    @property
    def last_phase(self) -> int:
        return max(self.phases)

    def phase_range(self) -> str:
        return f"phases 0 to {self.last_phase}" if self.last_phase else "phase 0"


class TableError(ValueError):
    """A rule of the table is broken; `key` is the stack key (without the project) it is about."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _spec_error(exc: ValidationError, key: str, fields: Mapping[str, str] | None = None) -> TableError:
    """The first error of a spec's validation, under the table key of the field it names."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    where = (fields or {}).get(loc[0], to_camel(loc[0])) if loc else ""
    return TableError(f"{key}.{where}" if where else key, err["msg"].removeprefix("Value error, "))


def _stream_decl(name: str, key: str, entry: StreamEntry, phases: Mapping[int, str],
                 stack_wide: Mapping[str, Any]) -> StreamDecl:
    if problem := name_problem(name, "stream"):
        raise TableError(key, problem)
    if not entry.phases:
        raise TableError(f"{key}.phases", f"stream {name} exists in no phase; list the phases it exists in")
    settings = {**stack_wide, **settings_of(entry, StreamEntryFields)}
    specs: dict[int, StreamSpec] = {}
    for phase, subjects in sorted(entry.phases.items()):
        if phase not in phases:
            raise TableError(f"{key}.phases.{phase}", f"phase {phase} is not declared in the topology's phases "
                                                      f"({', '.join(map(str, phases))})")
        try:
            specs[phase] = StreamSpec.model_validate({**settings, "name": name, "subjects": subjects})
        except ValidationError as exc:
            raise _spec_error(exc, key, {"subjects": f"phases.{phase}"}) from None
    idle = next(iter(specs.values())).model_copy(update={"subjects": ()})
    return StreamDecl(key=key, name=name, role=entry.role, specs=specs, idle=idle)


def _durable_decl(name: str, key: str, entry: DurableEntry, phases: Mapping[int, str],
                  streams: Mapping[str, StreamDecl]) -> DurableDecl:
    if problem := name_problem(name, "consumer"):
        raise TableError(key, problem)
    missing = [p for p in phases if p not in entry.homes]
    if missing:
        raise TableError(f"{key}.homes", f"durable {name} has no home stream in phase "
                                         f"{', '.join(map(str, missing))}; give one for each phase "
                                         f"({', '.join(map(str, phases))})")
    for phase, home in sorted(entry.homes.items()):
        if phase not in phases:
            raise TableError(f"{key}.homes.{phase}", f"phase {phase} is not declared in the topology's phases")
        stream = streams.get(home)
        if stream is None:
            raise TableError(f"{key}.homes.{phase}", f"{home!r} is not a stream of the topology "
                                                     f"({', '.join(streams)})")
        spec = stream.spec(phase)
        if spec is None:
            raise TableError(f"{key}.homes.{phase}", f"stream {home} does not exist in phase {phase} "
                                                     f"({stream.key}.phases has no {phase})")
        if not any(subjects_overlap(entry.filter_subject, s) for s in spec.subjects):
            owned = ", ".join(spec.subjects) or "no subjects"
            raise TableError(f"{key}.filterSubject", (
                f"{entry.filter_subject!r} matches no subject of stream {home} ({owned}), where durable {name} "
                f"lives in phase {phase}; use a subject under {' or '.join(spec.subjects) or 'a subject it owns'}"))
    latest_first = [entry.homes[p] for p in sorted(entry.homes, reverse=True)]
    candidates = entry.candidates or tuple(dict.fromkeys(latest_first))
    for stream_name in candidates:
        if stream_name not in streams:
            raise TableError(f"{key}.candidates", f"{stream_name!r} is not a stream of the topology "
                                                  f"({', '.join(streams)})")
    if left_out := sorted(set(latest_first) - set(candidates)):
        raise TableError(f"{key}.candidates", f"misses {', '.join(left_out)}, a home of durable {name}: a service "
                                              "would never bind there; add it")
    try:
        template = ConsumerSpec.model_validate({
            "ack_policy": "explicit", **settings_of(entry, DurableEntryFields),
            "stream": entry.homes[0], "durable_name": name, "filter_subjects": (entry.filter_subject,)})
    except ValidationError as exc:
        raise _spec_error(exc, key, {"filter_subjects": "filterSubject"}) from None
    return DurableDecl(key=key, durable=name, homes=dict(entry.homes), candidates=tuple(candidates),
                       filter_subject=entry.filter_subject, template=template)


def resolve(table: TopologyConfig, stack_wide: Mapping[str, Any], keys: Mapping[str, str] | None = None) -> Table:
    """Check the table's rules and build every phase's specs, or raise TableError naming the key.

    `stack_wide` are stream fields the stack sets for every stream (a stream's own value wins);
    `keys` maps a stream or durable name to the stack key that declares it, when that is not
    `topology.streams.<name>` / `topology.durables.<name>` (the seeds' `streams`/`consumers`).
    """
    keys = keys or {}
    phases = dict(sorted(table.phases.items()))
    if list(phases) != list(range(len(phases))) or not phases:
        raise TableError("topology.phases", f"phases are numbered 0, 1, 2, ... without a gap; got "
                                            f"{', '.join(map(str, phases)) or 'none'}")
    streams = {name: _stream_decl(name, keys.get(name, f"topology.streams.{name}"), entry, phases, stack_wide)
               for name, entry in table.streams.items()}
    for phase in phases:
        owned = [(s, x) for s in streams.values() if (spec := s.spec(phase)) for x in spec.subjects]
        for i, (a, x) in enumerate(owned):
            for b, y in owned[i + 1:]:
                if a is not b and subjects_overlap(x, y):
                    raise TableError(f"{b.key}.phases.{phase}", (
                        f"{y!r} overlaps {x!r} of stream {a.name} in phase {phase}: a subject has one owner per "
                        "phase; move it in one phase (leave it out of one of the two)"))
    durables = tuple(_durable_decl(name, keys.get(name, f"topology.durables.{name}"), entry, phases, streams)
                     for name, entry in table.durables.items())
    return Table(phases, tuple(streams.values()), durables)


# -- the seeds' table ---------------------------------------------------------------------------
_CORE = ["athlete-ally.>", "sleep.*"]
_VENDOR = ["vendor.>"]
_DLQ = ["dlq.>"]

#: The seeds' move from one stream to three (examples/topology-seeds.yaml writes the same table).
#: Stream roles and durable keys name the `streams`/`consumers` overrides that apply to it.
SEEDS: dict[str, Any] = {
    "phases": {
        0: "ATHLETE_ALLY_EVENTS owns everything, AA_DLQ owns dlq.>",
        1: "vendor.> moves to AA_VENDOR_HOT",
        2: "athlete-ally.> and sleep.* move to AA_CORE_HOT; ATHLETE_ALLY_EVENTS owns nothing",
        3: "ATHLETE_ALLY_EVENTS is removed",
    },
    "streams": {
        "ATHLETE_ALLY_EVENTS": {"role": "legacy", "maxAge": "24h",
                                "phases": {0: [*_CORE, *_VENDOR], 1: _CORE, 2: []}},
        "AA_CORE_HOT": {"role": "core", "maxAge": "48h", "phases": {2: _CORE, 3: _CORE}},
        "AA_VENDOR_HOT": {"role": "vendor", "maxAge": "48h", "phases": {1: _VENDOR, 2: _VENDOR, 3: _VENDOR}},
        "AA_DLQ": {"role": "dlq", "maxAge": "14d", "phases": dict.fromkeys(range(4), _DLQ)},
    },
    "durables": {
        "normalize-hrv-durable": {
            "filterSubject": "athlete-ally.hrv.>", "ackPolicy": "explicit", "maxDeliver": 5, "ackWait": "60s",
            "maxAckPending": 1000, "homes": {0: "ATHLETE_ALLY_EVENTS", 1: "ATHLETE_ALLY_EVENTS", 2: "AA_CORE_HOT",
                                             3: "AA_CORE_HOT"},
            "candidates": ["AA_CORE_HOT", "ATHLETE_ALLY_EVENTS"]},
        "normalize-oura": {
            "filterSubject": "vendor.oura.>", "ackPolicy": "explicit", "maxDeliver": 5, "ackWait": "60s",
            "maxAckPending": 1000, "homes": {0: "ATHLETE_ALLY_EVENTS", 1: "AA_VENDOR_HOT", 2: "AA_VENDOR_HOT",
                                             3: "AA_VENDOR_HOT"},
            "candidates": ["AA_VENDOR_HOT", "ATHLETE_ALLY_EVENTS"]},
    },
}
#: The seeds' durables by the key of their `consumers` override.
SEED_DURABLES = {"hrv": "normalize-hrv-durable", "oura": "normalize-oura"}
