"""Diagnostics for the `eventbus` CLI: compute and format, never print.

Every function here is pure: server replies are parsed once into the live
model (`components.jetstream.live`) and shown as `StreamState` / `ConsumerState`
rows, reports are computed from those, and reports are formatted into a table
(`format_*`) or a JSON-ready dict (`*_json`). Reading the server, printing and
exit codes live in `components.cli.main`; migration verification is
`components.migration.verify.verify_phase`, so the CLI and the `pulumi up` phase
gate run the same checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from components.jetstream.errors import ConfigError
from components.jetstream.live import LiveConsumer, LiveStream
from components.migration.probe import Check, Thresholds, health_checks
from components.migration.topology import Plan, Topology, phase_topology, plan
from components.migration.verify import Finding, passed
from components.spec.durations import format_duration
from components.spec.stack import PROJECT, STACK_KEYS, StackConfig
from components.spec.stream import StreamSpec
from components.spec.subjects import subjects_overlap

#: The project's key prefix in `Pulumi.<stack>.yaml`.

#: The embedded staging server (`make up`), used when neither --url, NATS_URL nor a stack names one.
DEFAULT_URL = "nats://127.0.0.1:4223"

# -- stack file ------------------------------------------------------------------------
def stack_values(doc: Any, source: str = "stack file") -> dict[str, Any]:
    """The raw config values of a parsed `Pulumi.<stack>.yaml`, ready for `parse_stack_config`.

    Only this project's keys are taken (prefix `aa-event-bus:`); `secure:` values are
    skipped (they cannot be decrypted here; credentials come from NATS_* variables).
    Numbers written as strings ("0") are left to the config model, which accepts them.
    """
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(source, "expected a YAML mapping with a `config:` section")
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{source}:config", "expected a mapping of `aa-event-bus:<key>: value`")
    values: dict[str, Any] = {}
    for key, value in config.items():
        name = str(key)
        if ":" in name:
            project, _, name = name.partition(":")
            if project != PROJECT:
                continue
        if name not in STACK_KEYS:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue
        values[name] = value
    return values


# -- small formatting helpers ----------------------------------------------------------
def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def count(n: int) -> str:
    return f"{n:,}"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """A plain-text table: one header line, aligned columns, numeric columns (`right`) right-aligned."""
    body = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align_right = set(right)

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(widths[i]) if i in align_right else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in body)])


# -- stream info -----------------------------------------------------------------------
#: The stream config fields `stream info` shows, read through the spec's own wire declarations.
SPEC_COLUMNS = ("retention", "replicas", "storage", "compression", "max_age")


@dataclass(frozen=True)
class StreamState:
    """One managed stream as the server reports it (or `exists=False`)."""

    name: str
    role: str = ""
    exists: bool = False
    subjects: tuple[str, ...] = ()
    retention: str = ""
    replicas: int = 0
    storage: str = ""
    compression: str = ""
    max_age: str = ""
    messages: int = 0
    bytes: int = 0
    consumers: int = 0
    first_seq: int = 0
    last_seq: int = 0
    #: The parsed server state the row shows (not part of the row's JSON).
    live: LiveStream | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_info(cls, name: str, info: Mapping[str, Any] | None, role: str = "") -> StreamState:
        if info is None:
            return cls(name=name, role=role)
        live = LiveStream.from_info(info)
        config = live.config
        return cls(
            name=name,
            role=role,
            exists=True,
            subjects=live.subjects,
            **{name: StreamSpec.field_from_wire(name, config) for name in SPEC_COLUMNS},
            messages=live.messages,
            bytes=live.bytes,
            consumers=live.consumer_count,
            first_seq=live.first_seq,
            last_seq=live.last_seq,
            live=live,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("live")
        data["subjects"] = list(self.subjects)
        return data


def stream_states(stack: StackConfig, infos: Mapping[str, Mapping[str, Any] | None]) -> list[StreamState]:
    """Every stream of the topology table, in its order, missing ones included."""
    return [StreamState.from_info(s.name, infos.get(s.name), s.role) for s in stack.table.streams]


def format_streams(states: Sequence[StreamState], url: str) -> str:
    headers = ["STREAM", "ROLE", "SUBJECTS", *(c.replace("_", " ").upper() for c in SPEC_COLUMNS),
               "MESSAGES", "BYTES", "CONSUMERS", "FIRST SEQ", "LAST SEQ"]
    rows = []
    for s in states:
        if not s.exists:
            rows.append([s.name, s.role, "(missing)", *["-"] * 10])
            continue
        rows.append([
            s.name, s.role, ", ".join(s.subjects) or "(none)", *(str(getattr(s, c)) for c in SPEC_COLUMNS),
            count(s.messages), human_bytes(s.bytes), str(s.consumers),
            str(s.first_seq), str(s.last_seq),
        ])
    present = sum(1 for s in states if s.exists)
    summary = f"{present} of {len(states)} streams present"
    missing = [s.name for s in states if not s.exists]
    if missing:
        summary += f"; missing: {', '.join(missing)}"
    table = render_table(headers, rows, right=(4, 8, 9, 10, 11, 12))
    return f"JetStream streams at {url}\n\n{table}\n\n{summary}"


def streams_json(states: Sequence[StreamState], url: str) -> dict[str, Any]:
    return {"url": url, "streams": [s.as_dict() for s in states]}


# -- consumer diagnostic ---------------------------------------------------------------
@dataclass(frozen=True)
class ConsumerState:
    """One durable consumer as the CLI shows it: its live state, and its config in human units."""

    stream: str
    live: LiveConsumer = field(default_factory=LiveConsumer)

    @classmethod
    def from_info(cls, stream: str, info: Mapping[str, Any]) -> ConsumerState:
        return cls(stream, LiveConsumer.from_info(info))

    @property
    def durable(self) -> str:
        return self.live.name

    def as_dict(self) -> dict[str, Any]:
        """The row's JSON: the live counts and positions, and the config fields a reader acts on."""
        live = {k: v for k, v in asdict(self.live).items() if k not in ("name", "filters", "config")}
        config = self.live.config
        return {"stream": self.stream, "durable": self.durable, "filter_subjects": list(self.live.filters),
                "ack_policy": str(config.get("ack_policy", "")),
                "ack_wait": format_duration(int(config.get("ack_wait") or 0)),
                "deliver_policy": str(config.get("deliver_policy", "")), **live}


@dataclass(frozen=True)
class ConsumerReport:
    state: ConsumerState
    checks: tuple[Check, ...]

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def status(self) -> str:
        s = self.state.live
        if s.pending == 0:
            return f"caught up ({count(s.ack_pending)} awaiting ack)" if s.ack_pending else "caught up"
        return f"backlog: {count(s.pending)} pending, {count(s.ack_pending)} awaiting ack"


def consumer_report(state: ConsumerState, thresholds: Thresholds) -> ConsumerReport:
    return ConsumerReport(state, health_checks(state.live, thresholds))


def format_consumer(report: ConsumerReport, url: str) -> str:
    row = report.state.as_dict()
    s = report.state.live
    rows = [
        ["filter subject(s)", ", ".join(s.filters) or "(none: the whole stream)"],
        ["type", "push" if s.push else "pull"],
        ["ack policy", row["ack_policy"]],
        ["ack wait", row["ack_wait"]],
        ["max deliver", "unlimited" if s.max_deliver == -1 else str(s.max_deliver)],
        ["deliver policy", row["deliver_policy"]],
        ["pending", count(s.pending)],
        ["ack pending", count(s.ack_pending)],
        ["redelivered", count(s.redelivered)],
        ["waiting pulls", count(s.waiting)],
        ["delivered seq", f"stream {s.delivered_stream_seq}, consumer {s.delivered_consumer_seq}"],
        ["ack floor seq", f"stream {s.ack_floor_stream_seq}, consumer {s.ack_floor_consumer_seq}"],
        ["status", report.status],
    ]
    out = [f"Consumer {report.state.stream}/{s.name} at {url}", "", render_table(["FIELD", "VALUE"], rows)]
    if report.checks:
        out += ["", render_table(["CHECK", "RESULT"], [[c.name, ("OK   " if c.ok else "FAIL ") + c.message]
                                                     for c in report.checks])]
        out += ["", "HEALTHY" if report.healthy else
                "UNHEALTHY: " + "; ".join(c.message for c in report.checks if not c.ok)]
    return "\n".join(out)


def consumer_json(report: ConsumerReport, url: str) -> dict[str, Any]:
    return {
        "url": url,
        "found": True,
        "consumer": report.state.as_dict(),
        "caught_up": report.state.live.pending == 0,
        "status": report.status,
        "checks": [{**asdict(c), "message": c.message} for c in report.checks],
        "healthy": report.healthy,
    }


def missing_consumer_message(stream: str, durable: str, stream_exists: bool, found_on: Sequence[str]) -> str:
    """Why there is nothing to diagnose, and where to look instead."""
    text = (f"consumer {durable} not found on stream {stream}" if stream_exists
            else f"stream {stream} not found, so consumer {durable} is not there either")
    if found_on:
        text += f"; {durable} exists on {', '.join(found_on)} (try: eventbus consumer diagnostic {found_on[0]} {durable})"
    return text


def missing_consumer_json(stream: str, durable: str, stream_exists: bool, found_on: Sequence[str],
                          url: str) -> dict[str, Any]:
    return {
        "url": url,
        "found": False,
        "stream": stream,
        "durable": durable,
        "stream_exists": stream_exists,
        "found_on": list(found_on),
        "message": missing_consumer_message(stream, durable, stream_exists, found_on),
        "healthy": False,
    }


# -- migration verify ------------------------------------------------------------------
_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def format_verify(phase: int, findings: Sequence[Finding], url: str, strict: bool = False) -> str:
    rows = [[_MARK[f.status], f.target, f.message] for f in findings]
    tally = {k: sum(1 for f in findings if f.status == k) for k in ("pass", "warn", "fail")}
    ok = verify_ok(findings, strict)
    verdict = f"Phase {phase} verification {'PASSED' if ok else 'FAILED'}"
    if ok and tally["warn"]:
        verdict += " (with warnings)"
    return "\n".join([
        f"Phase {phase} migration verification at {url}",
        "",
        render_table(["STATUS", "TARGET", "DETAIL"], rows),
        "",
        f"Results: {tally['pass']} passed, {tally['warn']} warnings, {tally['fail']} failed",
        verdict,
    ])


def verify_ok(findings: Sequence[Finding], strict: bool = False) -> bool:
    """The verdict: no failure (and, when `strict`, no warning either)."""
    if strict:
        return all(f.status == "pass" for f in findings)
    return passed(list(findings))


def verify_json(phase: int, findings: Sequence[Finding], url: str, strict: bool = False) -> dict[str, Any]:
    return {
        "url": url,
        "phase": phase,
        "passed": verify_ok(findings, strict),
        "strict": strict,
        "counts": {k: sum(1 for f in findings if f.status == k) for k in ("pass", "warn", "fail")},
        "findings": [f.as_dict() for f in findings],
    }


# -- plan ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubjectOwner:
    """Who owns `subject` now (live) and in the target phase; `messages` stored under it now."""

    subject: str
    now: str | None
    then: str | None
    messages: int = 0

    @property
    def moves(self) -> bool:
        return self.now != self.then


@dataclass(frozen=True)
class AffectedConsumer:
    """A durable that reads a moving subject: where it is now, its backlog, where it lives in the phase."""

    subject: str
    durable: str
    stream: str | None
    pending: int | None
    ack_pending: int | None
    then: str | None


@dataclass(frozen=True)
class StreamChange:
    name: str
    #: create: new in the phase; remove: deleted by the move; keep: left in the phase, owning no
    #: subjects, because it still holds data (pulumi up removes it later)
    action: Literal["create", "remove", "keep"]
    messages: int = 0


@dataclass(frozen=True)
class PlanReport:
    phase: int
    subjects: tuple[SubjectOwner, ...]
    consumers: tuple[AffectedConsumer, ...]
    streams: tuple[StreamChange, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def moving(self) -> tuple[SubjectOwner, ...]:
        return tuple(s for s in self.subjects if s.moves)


def _owner(subject: str, owners: Mapping[str, Sequence[str]]) -> str | None:
    """The stream listing `subject` exactly, else the first whose subjects overlap it."""
    for name, subjects in owners.items():
        if subject in subjects:
            return name
    for name, subjects in owners.items():
        if any(subjects_overlap(subject, s) for s in subjects):
            return name
    return None


def subject_owners(stack: StackConfig, phase: int, live: Sequence[StreamState]) -> list[SubjectOwner]:
    """Every subject owned now or in `phase`, with its owner on each side (message counts not yet known)."""
    target = phase_topology(stack.model_copy(update={"phase": phase}))
    now = {s.name: s.subjects for s in live if s.exists}
    then = {s.name: s.subjects for s in target.streams}
    subjects = sorted({x for subs in (*now.values(), *then.values()) for x in subs})
    return [SubjectOwner(x, _owner(x, now), _owner(x, then)) for x in subjects]


def plan_report(
    stack: StackConfig,
    phase: int,
    live: Sequence[StreamState],
    consumers: Sequence[ConsumerState],
    counts: Mapping[tuple[str, str], int],
) -> PlanReport:
    """The impact of moving to `phase`: subjects that change owner, their stored messages, the durables
    reading them and the streams created or removed. `counts[(stream, subject)]` is the number of
    messages the stream stores under the subject (read by the caller for the moving subjects)."""
    target = phase_topology(stack.model_copy(update={"phase": phase}))
    owners = [
        SubjectOwner(o.subject, o.now, o.then, counts.get((o.now, o.subject), 0) if o.now else 0)
        for o in subject_owners(stack, phase, live)
    ]
    by_name = {s.name: s for s in live}
    homes = {c.durable_name: c.stream for c in target.consumers}
    affected: list[AffectedConsumer] = []
    for owner in owners:
        if not owner.moves:
            continue
        seen: set[str] = set()
        for c in consumers:
            stream_subjects = by_name[c.stream].subjects if c.stream in by_name else ()
            if c.live.reads(owner.subject, stream_subjects):
                affected.append(AffectedConsumer(owner.subject, c.durable, c.stream, c.live.pending,
                                                 c.live.ack_pending, homes.get(c.durable)))
                seen.add(c.durable)
        for spec in target.consumers:
            if spec.durable_name not in seen and any(subjects_overlap(owner.subject, f) for f in spec.filter_subjects):
                affected.append(AffectedConsumer(owner.subject, spec.durable_name, None, None, None, spec.stream))
    decided = _planner(stack, target, live, consumers)
    kept = {s.name for s in decided.streams} - {s.name for s in target.streams}
    present = {s.name for s in live if s.exists}
    wanted = {s.name for s in target.streams}
    changes = [StreamChange(s.name, "create") for s in target.streams if s.name not in present]
    changes += [StreamChange(s.name, "keep" if s.name in kept else "remove", s.messages)
                for s in live if s.exists and s.name not in wanted]
    return PlanReport(phase, tuple(owners), tuple(affected), tuple(changes), decided.warnings)


def _planner(stack: StackConfig, target: Topology, live: Sequence[StreamState],
             consumers: Sequence[ConsumerState]) -> Plan:
    """What `pulumi up` will really do: the topology planner run on the same live view as the program."""
    view = {
        s.name: dataclasses.replace(s.live, consumers={c.durable: c.live for c in consumers if c.stream == s.name})
        for s in live if s.live is not None
    }
    return plan(target, stack, view)


def format_plan(report: PlanReport, url: str, stack_phase: int | None = None) -> str:
    p = report.phase
    head = f"Plan: the live server at {url} versus phase {p}"
    if stack_phase is not None:
        head += f" (the stack is at phase {stack_phase})"
    subject_rows = [
        [o.subject, o.now or "(nobody)", o.then or "(nobody)", "moves" if o.moves else "stays",
         count(o.messages) if o.moves else ""]
        for o in report.subjects
    ]
    out = [head, "", render_table(["SUBJECT", "NOW", f"IN PHASE {p}", "CHANGE", "MESSAGES"], subject_rows, right=(4,))]
    if report.consumers:
        rows = [
            [c.durable, c.subject, c.stream or "(not yet created)",
             "-" if c.pending is None else count(c.pending), "-" if c.ack_pending is None else count(c.ack_pending),
             c.then or "(removed)"]
            for c in report.consumers
        ]
        out += ["", "Consumers affected", render_table(
            ["DURABLE", "SUBJECT", "NOW ON", "PENDING", "ACK PENDING", f"IN PHASE {p} ON"], rows, right=(3, 4))]
    if report.streams:
        label = {"create": "created", "remove": "removed", "keep": "kept, owning no subjects, until drained"}
        rows = [[s.name, label[s.action], "" if s.action == "create" else count(s.messages)] for s in report.streams]
        out += ["", "Streams", render_table(["STREAM", "CHANGE", "MESSAGES"], rows, right=(2,))]
    moving = report.moving
    if moving:
        total = sum(o.messages for o in moving)
        backlog = sum(LiveConsumer(c.pending or 0, c.ack_pending or 0).unprocessed for c in report.consumers)
        out += ["", f"{len(moving)} subject(s) move; {count(total)} message(s) stored under them stay where they are "
                    f"(new messages go to the new owner); {count(backlog)} unprocessed by the affected consumers."]
    else:
        out += ["", f"Nothing moves: the live server already has phase {p}'s subject ownership."]
    if report.notes:
        out += ["", "pulumi up will keep, so that nothing is lost:", *(f"  - {n}" for n in report.notes)]
    return "\n".join(out)


def plan_json(report: PlanReport, url: str, stack_phase: int | None = None) -> dict[str, Any]:
    return {
        "url": url,
        "phase": report.phase,
        "stack_phase": stack_phase,
        "subjects": [{**asdict(o), "moves": o.moves} for o in report.subjects],
        "consumers": [asdict(c) for c in report.consumers],
        "streams": [asdict(s) for s in report.streams],
        "notes": list(report.notes),
    }
