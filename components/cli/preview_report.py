"""`eventbus preview-report`: a `pulumi preview --json` as a Markdown summary for a pull request.

Three steps, kept apart:

* compute: `summarize(preview, stack)` reads the preview JSON of the real CLI
  (steps with `op`, `urn`, `oldState`/`newState` with `inputs`; `diagnostics`;
  `config`; `changeSummary`) into a `Summary`: per resource the operation and
  the changed input fields, the subjects and consumers that move between
  streams, the destructive steps and whether each was explicitly allowed, the
  data-loss opt-ins in use, and the program's warnings and errors;
* format: `to_markdown(summary)`; `render(preview, stack)` does both and picks
  the exit code; `build_report()` also covers a preview that did not run;
* edge: `command` runs the preview (or reads it from a file), prints, writes
  `--output`, and exits with the report's code.

Destructive: a replace of a stream or consumer; a delete of a stream; a delete of
a consumer that is not a move (no create of the same durable on another stream in
the same preview); a data-loss refusal the providers raised while previewing.
Allowed: the resource's old or new inputs have `allow_data_loss` on, or, for a
stream delete, the program saw the stream empty on the server during this
preview, or, for a consumer delete, it saw the durable with nothing pending or
unacknowledged. Pulumi v3.259 does not put stack outputs into `preview --json`,
so the program says so in info diagnostics ("empty streams on the server: ...",
"drained durables on the server: ..."), which `empty_streams()` and
`drained_durables()` read.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from components.cli.diagnostics import PlanReport
from components.migration import policy
from components.migration.preflight import OFFLINE_NOTE
from components.migration.topology import DRAINED_DURABLES_NOTE, EMPTY_STREAMS_NOTE, MISOWNED_WARNING, UNOWNED_WARNING
from components.pulumi.inputs import CONSUMER_INPUTS, GATE_INPUTS, STREAM_INPUTS, report_ignored
from components.spec.consumer import ConsumerSpec
from components.spec.stream import StreamSpec
from components.spec.subjects import subjects_overlap


def _warning_pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(re.escape("{subject}"), r"(?P<subject>\S+)"))


#: The program's warnings that a topology subject has no stream, or another managed stream's, on the server.
UNOWNED = _warning_pattern(UNOWNED_WARNING)
MISOWNED = _warning_pattern(MISOWNED_WARNING)

#: Exit codes.
OK, BLOCKED, CANNOT_PREVIEW = 0, 1, 2

STREAM_TYPE = "pulumi-python:dynamic/jetstream:Stream"
CONSUMER_TYPE = "pulumi-python:dynamic/jetstream:Consumer"
GATE_TYPE = "pulumi-python:dynamic/jetstream:PhaseGate"
STACK_TYPE = "pulumi:pulumi:Stack"
KINDS = {STREAM_TYPE: "stream", CONSUMER_TYPE: "consumer", GATE_TYPE: "phase gate"}

#: Pulumi's step operations, folded into what a reviewer needs (the JSON digest shows the
#: logical `replace` step; the physical replacement steps are folded in case they appear).
REPLACE_OPS = frozenset({"replace", "create-replacement", "delete-replaced", "import-replacement",
                         "read-replacement", "discard-replaced", "remove-pending-replace"})
OP_RANK = {"replace": 6, "delete": 5, "create": 4, "import": 4, "update": 3, "read": 2, "same": 1, "refresh": 0}
#: The order of the change counts in the report.
COUNT_ORDER = ("create", "update", "replace", "delete", "same")

#: Inputs that are not config: the pickled provider, the output placeholders the resources
#: declare (a refresh copies their values into the inputs), and the inputs declared unreported
#: (the create-time adoption note, what the state does not keep).
IGNORED_INPUTS = report_ignored()

#: How Pulumi writes a value it will only know after apply.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

#: Longest value shown in a table cell before it is cut.
MAX_VALUE = 90
#: Program output lines shown (collapsed) at most.
MAX_OUTPUT_LINES = 40


# -- the model ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldChange:
    """One changed input: a top-level field or a dotted path into a mapping."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class ResourceChange:
    """What the preview does to one resource."""

    kind: str  # "stream", "consumer", "phase gate", or the Pulumi type for anything else
    name: str  # the resource name: a stream name, "STREAM/durable", the gate's name
    op: str  # create, update, replace, delete, same, ... (replacement steps folded into replace)
    old: Mapping[str, Any]  # old inputs ({} on create)
    new: Mapping[str, Any]  # new inputs ({} on delete)
    fields: tuple[FieldChange, ...] = ()
    replace_reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def allow_data_loss(self) -> bool:
        return bool(self.old.get("allow_data_loss")) or bool(self.new.get("allow_data_loss"))

    def opted(self, opted: Iterable[str]) -> bool:
        """The resource's inputs or the stack's `allowDataLoss` entries (`opted`) allow it to lose data."""
        return policy.allowed(self.name, opted, self.allow_data_loss)


@dataclass(frozen=True)
class Move:
    """A subject or a durable consumer that changes stream; None is "no stream"."""

    what: str
    source: str | None
    target: str | None


@dataclass(frozen=True)
class Destructive:
    """A step that can destroy stored messages or a consumer's position."""

    label: str  # e.g. "stream AA_CORE_HOT"
    op: str  # replace, delete, or "refused" (the provider refused it while previewing)
    allowed: bool
    reason: str


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # error, warning, info, info#err
    message: str
    resource: str | None  # e.g. "stream AA_DLQ", when the diagnostic is about a stream, consumer or gate


@dataclass(frozen=True)
class Summary:
    stack: str
    phase_old: int | None
    phase_new: int | None
    resources: tuple[ResourceChange, ...]
    counts: Mapping[str, int]
    subject_moves: tuple[Move, ...]
    consumer_moves: tuple[Move, ...]
    destructive: tuple[Destructive, ...]
    opt_ins: tuple[str, ...]  # the stack's allowDataLoss entries
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")

    @property
    def blocked(self) -> tuple[Destructive, ...]:
        return tuple(d for d in self.destructive if not d.allowed)

    @property
    def offline(self) -> bool:
        """The program previewed without the server (preflight.OFFLINE_ENV): nothing was checked."""
        return any(OFFLINE_NOTE in d.message for d in self.diagnostics)

    @property
    def failed(self) -> bool:
        """The preview stopped on an error: the steps shown are not the whole plan."""
        return bool(self.errors)

    @property
    def unowned(self) -> tuple[Diagnostic, ...]:
        """The program's warnings that a subject has no stream on the server (an interrupted deploy),
        or is owned by another managed stream than the applied one (a hand edit)."""
        return tuple(d for d in self.diagnostics
                     if d.severity == "warning" and (UNOWNED.match(d.message) or MISOWNED.match(d.message)))

    @property
    def exit_code(self) -> int:
        refusals = {d.reason for d in self.destructive if d.op == "refused"}
        if any(e.message not in refusals for e in self.errors):
            return CANNOT_PREVIEW
        return BLOCKED if self.blocked or self.unowned else OK


@dataclass(frozen=True)
class Report:
    markdown: str
    destructive: tuple[Destructive, ...]
    blocked: tuple[Destructive, ...]
    exit_code: int


# -- compute -----------------------------------------------------------------------------
def _urn_parts(urn: str) -> tuple[str, str, str]:
    """(stack, type, name) of a URN `urn:pulumi:STACK::PROJECT::PARENT$TYPE::NAME`."""
    parts = urn.split("::")
    if len(parts) < 4:
        return "", "", urn
    return parts[0].removeprefix("urn:pulumi:"), parts[2].rsplit("$", 1)[-1], "::".join(parts[3:])


def _inputs(state: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((state or {}).get("inputs") or {})


def _with_defaults(rtype: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """A stream's or consumer's inputs with the spec's defaults filled in.

    The program sends only non-default fields, so a field going back to its default
    (or a stream left owning no subjects) would otherwise read as "unset".
    """
    specs: dict[str, type[StreamSpec] | type[ConsumerSpec]] = {STREAM_TYPE: StreamSpec, CONSUMER_TYPE: ConsumerSpec}
    spec_cls = specs.get(rtype)
    if not inputs:
        return inputs
    declared = {STREAM_TYPE: STREAM_INPUTS, CONSUMER_TYPE: CONSUMER_INPUTS, GATE_TYPE: GATE_INPUTS}.get(rtype)
    if declared is not None:
        inputs = declared.with_defaults(inputs)  # registered only when not at their default
    if spec_cls is None:
        return inputs
    fields = spec_cls.model_fields
    try:
        spec = spec_cls.model_validate({k: v for k, v in inputs.items() if k in fields})
    except ValidationError:
        return inputs
    return {**inputs, **spec.props(full=True)}


def _fold_op(op: str) -> str:
    return "replace" if op in REPLACE_OPS else op


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[FieldChange]:
    """Inputs that differ, sorted; mappings are compared key by key (`stack.phase`), lists whole."""
    changes: list[FieldChange] = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in IGNORED_INPUTS:
            continue
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes.extend(field_changes(a, b, f"{path}."))
        else:
            changes.append(FieldChange(path, a, b))
    return changes


def resource_changes(preview: Mapping[str, Any]) -> list[ResourceChange]:
    """One entry per resource, in preview order, for every step the preview shows."""
    by_urn: dict[str, ResourceChange] = {}
    for step in preview.get("steps") or []:
        urn = str(step.get("urn", ""))
        _, urn_type, name = _urn_parts(urn)
        old_state, new_state = step.get("oldState"), step.get("newState")
        rtype = str((new_state or old_state or {}).get("type") or urn_type)
        op = _fold_op(str(step.get("op", "")))
        old, new = _with_defaults(rtype, _inputs(old_state)), _with_defaults(rtype, _inputs(new_state))
        fields = tuple(field_changes(old, new)) if op in ("update", "replace") else ()
        change = ResourceChange(KINDS.get(rtype, rtype), name, op, old, new, fields,
                                tuple(step.get("replaceReasons") or ()))
        previous = by_urn.get(urn)
        if previous is None or OP_RANK.get(op, 0) >= OP_RANK.get(previous.op, 0):
            by_urn[urn] = change
    return list(by_urn.values())


def _phase(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def phases(preview: Mapping[str, Any], resources: Iterable[ResourceChange]) -> tuple[int | None, int | None]:
    """(old, new) phase: the last applied one (stack output, else the gate's old input) and the config's."""
    old = new = None
    for step in preview.get("steps") or []:
        if _urn_parts(str(step.get("urn", "")))[1] == STACK_TYPE:
            old = _phase(((step.get("oldState") or {}).get("outputs") or {}).get("phase"))
    for key, value in (preview.get("config") or {}).items():
        if str(key).rsplit(":", 1)[-1] == "phase":
            new = _phase(value)
    for res in resources:
        if res.kind == "phase gate":
            old = old if old is not None else _phase(res.old.get("phase"))
            new = new if new is not None else _phase(res.new.get("phase"))
    return old, new


def _noted(preview: Mapping[str, Any], note: str) -> set[str] | None:
    """The names the program's info diagnostic starting with `note` lists; None without one."""
    for diag in preview.get("diagnostics") or []:
        message = str(diag.get("message", "")).strip()
        if message.startswith(note):
            names = message.removeprefix(note)
            return set() if names == "none" else {n.strip() for n in names.split(",") if n.strip()}
    return None


def drained_durables(preview: Mapping[str, Any]) -> set[str]:
    """The managed streams' durables ("STREAM/durable") the program saw with nothing pending
    or unacknowledged during this preview (its info diagnostic, as for `empty_streams`)."""
    return _noted(preview, DRAINED_DURABLES_NOTE) or set()


def empty_streams(preview: Mapping[str, Any]) -> set[str]:
    """The managed streams the program saw holding no messages during this preview.

    Read from the program's info diagnostic; the `emptyStreams` stack output would say
    the same but the CLI (v3.259) leaves outputs out of preview JSON (oldState's are
    those of the last `pulumi up`: stale, never used here).
    """
    noted = _noted(preview, EMPTY_STREAMS_NOTE)
    if noted is not None:
        return noted
    for step in preview.get("steps") or []:
        if _urn_parts(str(step.get("urn", "")))[1] == STACK_TYPE:
            outputs = (step.get("newState") or {}).get("outputs") or {}
            return {str(n) for n in outputs.get("emptyStreams") or []}
    return set()


def subject_moves(resources: Iterable[ResourceChange]) -> list[Move]:
    """Subjects whose owning stream changes, from the streams' old and new `subjects` inputs."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for res in resources:
        if res.kind != "stream":
            continue
        for subject in res.old.get("subjects") or []:
            before[subject] = res.name
        if res.op != "delete":
            for subject in res.new.get("subjects") or []:
                after[subject] = res.name
    moves = [Move(s, before.get(s), after.get(s)) for s in sorted(set(before) | set(after))]
    return [m for m in moves if m.source != m.target]


def _durable(res: ResourceChange) -> str:
    return str(res.new.get("durable_name") or res.old.get("durable_name") or res.name.split("/", 1)[-1])


def _stream_of(res: ResourceChange) -> str:
    return str(res.new.get("stream") or res.old.get("stream") or res.name.split("/", 1)[0])


def consumer_moves(resources: Iterable[ResourceChange]) -> list[Move]:
    """Durables deleted on one stream and created on another in the same preview."""
    consumers = [r for r in resources if r.kind == "consumer"]
    created = {_durable(r): _stream_of(r) for r in consumers if r.op in ("create", "import")}
    moves = []
    for res in consumers:
        if res.op == "delete" and created.get(_durable(res), _stream_of(res)) != _stream_of(res):
            moves.append(Move(_durable(res), _stream_of(res), created[_durable(res)]))
    return moves


def _refusals(diagnostics: Iterable[Diagnostic]) -> list[Destructive]:
    """Errors in which a provider refused, while previewing, to destroy stored data."""
    return [
        Destructive(d.resource or "a resource", "refused", False, d.message)
        for d in diagnostics if d.severity == "error" and policy.is_refusal(d.message)
    ]


def destructive_steps(resources: Iterable[ResourceChange], empty: set[str],
                      diagnostics: Iterable[Diagnostic] = (), opted: Iterable[str] = (),
                      drained: Iterable[str] = ()) -> list[Destructive]:
    """The destructive steps of a preview, each judged allowed or blocked by the data-loss policy.

    `opted` is the stack config's allowDataLoss: the providers honour it on delete and
    replace even before it has been applied to the resource's state. What a resource
    holds is not in a preview, except the streams the program saw empty (`empty`) and
    the durables it saw drained (`drained`, "STREAM/durable").
    """
    opted, drained = set(opted), set(drained)
    resources = list(resources)
    moved = {(m.what, m.source) for m in consumer_moves(resources)}
    found: list[Destructive] = []
    for res in resources:
        if res.kind not in ("stream", "consumer") or res.op not in policy.DESTRUCTIVE_OPS:
            continue
        if res.kind == "consumer" and res.op == "delete" and (_durable(res), _stream_of(res)) in moved:
            continue
        kind: policy.Kind = "stream" if res.kind == "stream" else "consumer"
        op: policy.Op = "delete" if res.op == "delete" else "replace"
        seen_empty = kind == "stream" and op == "delete" and res.name in empty
        seen_drained = kind == "consumer" and op == "delete" and res.name in drained
        held = policy.Holding(kind, res.name, messages=0 if seen_empty else None,
                              pending=0 if seen_drained else None, ack_pending=0 if seen_drained else None)
        fields = res.replace_reasons or tuple(f.path for f in res.fields)
        verdict = policy.judge(held, op, res.opted(opted), fields)
        found.append(Destructive(res.label, res.op, verdict.allowed, verdict.reason))
    return found + _refusals(diagnostics)


def opt_ins(preview: Mapping[str, Any]) -> list[str]:
    """The stack config's allowDataLoss entries (a JSON list in the preview's config)."""
    for key, value in (preview.get("config") or {}).items():
        if str(key).rsplit(":", 1)[-1] == "allowDataLoss":
            return list(policy.opt_ins(value))
    return []


#: Prefixes the CLI and the dynamic-provider host put before a message.
_PREFIXES = ("error: ", "warning: ", "Exception calling application: ")


def diagnostics(preview: Mapping[str, Any]) -> list[Diagnostic]:
    out = []
    for diag in preview.get("diagnostics") or []:
        message = str(diag.get("message", "")).rstrip("\n")
        for prefix in _PREFIXES:
            message = message.removeprefix(prefix)
        urn = diag.get("urn")
        _, rtype, name = _urn_parts(str(urn)) if urn else ("", "", "")
        resource = f"{KINDS[rtype]} {name}" if rtype in KINDS else None
        out.append(Diagnostic(str(diag.get("severity", "info")), message, resource))
    return out


def summarize(preview: Mapping[str, Any], stack: str) -> Summary:
    """Everything the report says, computed from one preview JSON document. Pure."""
    resources = resource_changes(preview)
    diags = diagnostics(preview)
    old, new = phases(preview, resources)
    return Summary(
        stack=stack,
        phase_old=old,
        phase_new=new,
        resources=tuple(resources),
        counts=dict(preview.get("changeSummary") or {}),
        subject_moves=tuple(subject_moves(resources)),
        consumer_moves=tuple(consumer_moves(resources)),
        destructive=tuple(destructive_steps(resources, empty_streams(preview), diags, opt_ins(preview),
                                            drained_durables(preview))),
        opt_ins=tuple(opt_ins(preview)),
        diagnostics=tuple(diags),
    )


def stack_of(preview: Mapping[str, Any]) -> str | None:
    """The stack a preview belongs to, from its first step's URN."""
    for step in preview.get("steps") or []:
        stack = _urn_parts(str(step.get("urn", "")))[0]
        if stack:
            return stack
    return None


# -- format ------------------------------------------------------------------------------
def _value(value: Any) -> str:
    if value is None:
        text = "(unset)"
    elif value == UNKNOWN:
        text = "(known after apply)"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = ", ".join(_value(v) for v in value) if value else "(none)"
    elif isinstance(value, Mapping):
        text = json.dumps(value, sort_keys=True) if value else "{}"
    else:
        text = str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _phase_text(old: int | None, new: int | None) -> str:
    if old is None:
        return f"phase {'?' if new is None else new} (first deploy)"
    if new is None or old == new:
        return f"phase {old} (unchanged)"
    return f"phase {old} → {new}"


def _stream_text(name: str | None, *, new: bool) -> str:
    return name or ("(no stream)" if new else "(new)")


def _details(res: ResourceChange, moves: Mapping[tuple[str, str], str]) -> str:
    parts: list[str] = []
    if res.op in ("update", "replace"):
        parts = [f"{f.path}: {_code(_value(f.old))} → {_code(_value(f.new))}" for f in res.fields]
        if res.op == "replace" and res.replace_reasons:
            parts.append(f"replaced because of {', '.join(res.replace_reasons)}")
        return "; ".join(parts) or "—"
    if res.op in ("create", "import"):
        if res.kind == "stream":
            parts.append(f"subjects: {_code(_value(res.new.get('subjects')))}")
        elif res.kind == "consumer":
            parts.append(f"filter: {_code(_value(res.new.get('filter_subjects')))}")
            if res.new.get("deliver_policy") == "by_start_sequence":
                parts.append(f"starts at sequence {res.new.get('opt_start_seq')} (after the stream's existing messages)")
        elif res.kind == "phase gate":
            parts.append(f"phase: {_code(_value(res.new.get('phase')))}")
        if res.new.get("adoption"):
            parts.append(str(res.new["adoption"]))
        return "; ".join(parts) or "—"
    if res.op == "delete" and res.kind == "consumer":
        target = moves.get((_durable(res), _stream_of(res)))
        if target:
            return f"moves to {target}"
    return "—"


def _alert(kind: str, title: str, lines: Iterable[str]) -> list[str]:
    out = [f"> [!{kind}]", f"> **{title}**"]
    out.extend(f"> {line}" for line in lines)
    return [*out, ""]


def _about(diag: Diagnostic) -> str:
    """"stream X: " before a message about stream X that does not name it already."""
    if diag.resource and diag.resource.split(" ")[-1] not in diag.message:
        return f"{diag.resource}: "
    return ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def to_markdown(summary: Summary) -> str:
    """The PR comment. Pure."""
    lines = [f"### Event bus preview: `{summary.stack}`, {_phase_text(summary.phase_old, summary.phase_new)}", ""]
    order = [*COUNT_ORDER, *sorted(set(summary.counts) - set(COUNT_ORDER))]
    counts = [f"{summary.counts[op]} {'unchanged' if op == 'same' else 'to ' + op}"
              for op in order if summary.counts.get(op)]
    if summary.failed:
        lines += _alert("CAUTION", "The preview failed: the plan below is incomplete and cannot be applied.",
                        [f"- {_about(e)}{e.message.splitlines()[0]}" for e in summary.errors])
    elif not any(op != "same" for op in summary.counts):
        lines += ["**No changes.**", ""]
    if summary.offline:
        lines += _alert("WARNING", "Offline preview: nothing was checked against the server.",
                        ["- The live state was not read: kept-to-drain durables, the hand-over order and the "
                         "server's limits are not in this plan. Run the preview where the server is reachable."])
    if counts:
        lines += [" · ".join(counts), ""]

    if summary.unowned:
        lines += _alert("CAUTION", "Subjects without a stream, or owned by the wrong stream, on the server: "
                                   "publishes to them are refused or stored where no durable reads them until "
                                   "`pulumi up` claims them; this check fails until then.",
                        [f"- {d.message}" for d in summary.unowned])
    blocked = summary.blocked
    if blocked:
        lines += _alert("CAUTION", f"{_plural(len(blocked), 'destructive step')} not explicitly allowed: "
                                   "this check fails until resolved.",
                        [f"- **{d.op} {d.label}**: "
                         f"{'the provider refused it while previewing (error above)' if d.op == 'refused' else d.reason}"
                         for d in blocked])
    allowed = [d for d in summary.destructive if d.allowed]
    if allowed or summary.opt_ins:
        warn = [f"- **{d.op} {d.label}**: {d.reason}" for d in allowed]
        if summary.opt_ins:
            warn.append(f"- Data-loss opt-in in use (allowDataLoss): {', '.join(summary.opt_ins)}")
        lines += _alert("WARNING", "Data loss explicitly allowed", warn)

    if summary.consumer_moves:
        lines += ["**Consumers moving**", ""]
        lines += [f"- {m.what}: {_stream_text(m.source, new=False)} → {_stream_text(m.target, new=True)}"
                  for m in summary.consumer_moves]
        lines.append("")
    if summary.subject_moves:
        lines += ["**Subjects moving**", ""]
        lines += [f"- {_code(m.what)}: {_stream_text(m.source, new=False)} → {_stream_text(m.target, new=True)}"
                  for m in summary.subject_moves]
        lines.append("")
    lines += ownership_section(summary)
    warnings = [d for d in summary.diagnostics if d.severity == "warning"]
    if warnings:
        lines += ["**Warnings from the program**", ""]
        lines += [f"- {w.message}" for w in warnings]
        lines.append("")
    long_errors = [e for e in summary.errors if "\n" in e.message]
    if long_errors:
        lines += ["**Errors**", "", "```"]
        lines += [e.message for e in long_errors]
        lines += ["```", ""]

    shown = [r for r in summary.resources if r.kind in ("stream", "consumer", "phase gate") or r.op not in ("same", "refresh")]
    if shown:
        moves = {(m.what, m.source or ""): m.target or "" for m in summary.consumer_moves}
        lines += ["| Operation | Resource | Changes |", "|---|---|---|"]
        lines += [f"| {r.op} | {_cell(r.label)} | {_cell(_details(r, moves))} |" for r in shown]
        lines.append("")

    output = [line for d in summary.diagnostics if d.severity.startswith("info") for line in d.message.splitlines()]
    output = [line for line in output if line.strip()]
    if output:
        cut = output[-MAX_OUTPUT_LINES:]
        lines += [f"<details><summary>Program output ({_plural(len(output), 'line')}"
                  f"{', last ' + str(len(cut)) + ' shown' if len(cut) < len(output) else ''})</summary>", "", "```"]
        lines += cut
        lines += ["```", "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def render(preview: Mapping[str, Any], stack: str) -> Report:
    """The report for one preview JSON document: Markdown, destructive steps, exit code. Pure."""
    summary = summarize(preview, stack)
    return Report(to_markdown(summary), summary.destructive, summary.blocked, summary.exit_code)


def render_failure(stack: str, message: str) -> Report:
    """The report when there is no preview to summarize (the CLI did not run, or its output is not JSON)."""
    text = "\n".join([
        f"### Event bus preview: `{stack}`", "",
        *_alert("CAUTION", "The preview could not run: nothing was checked.", []),
        "```", message.strip() or "(no output)", "```", "",
    ])
    return Report(text, (), (), CANNOT_PREVIEW)


def build_report(stdout: str, returncode: int, stderr: str, stack: str | None) -> Report:
    """The report for what `pulumi preview --json` printed and how it exited. Pure."""
    tail = "\n".join(stderr.strip().splitlines()[-30:])
    try:
        preview = json.loads(stdout)
    except ValueError:
        preview = None
    if not isinstance(preview, dict):
        return render_failure(stack or "?", tail or f"pulumi preview exited {returncode} without JSON output")
    name = stack or stack_of(preview) or "?"
    if returncode and not any(d.get("severity") == "error" for d in preview.get("diagnostics") or []):
        preview = {**preview, "diagnostics": [
            *(preview.get("diagnostics") or []),
            {"severity": "error", "message": f"pulumi preview exited {returncode}: {tail or '(no message)'}"},
        ]}
    return render(preview, name)


# -- the ownership diagram ---------------------------------------------------------------
@dataclass(frozen=True)
class Ownership:
    """Which stream owns each subject before and after a change; None is "no stream"."""

    before: Mapping[str, str | None]
    after: Mapping[str, str | None]
    created: frozenset[str] = frozenset()  # streams the change creates
    deleted: frozenset[str] = frozenset()  # streams the change deletes
    kept: frozenset[tuple[str, str]] = frozenset()  # (durable, stream): kept on a stream until it drains
    streams: frozenset[str] = frozenset()  # every other stream to show (e.g. one owning no subjects)

    @property
    def moves(self) -> list[Move]:
        subjects = sorted(set(self.before) | set(self.after))
        return [Move(s, self.before.get(s), self.after.get(s)) for s in subjects
                if self.before.get(s) != self.after.get(s)]

    @property
    def changes(self) -> bool:
        return bool(self.moves or self.created or self.deleted or self.kept)


def ownership(summary: Summary) -> Ownership:
    """Subject ownership before and after a preview, from its streams' old and new inputs.

    A durable is kept to drain when the preview keeps it (no delete) on a stream that,
    after the change, owns none of the subjects it reads: the program keeps such a
    durable only while it still has unprocessed messages.
    """
    streams = [r for r in summary.resources if r.kind == "stream"]
    before: dict[str, str | None] = {s: r.name for r in streams for s in r.old.get("subjects") or []}
    for warning in summary.unowned:  # the server's owner, where it differs from the stack's state
        if found := UNOWNED.match(warning.message):
            before[found["subject"]] = None
        elif found := MISOWNED.match(warning.message):
            before[found["subject"]] = warning.message[found.end():].split(" (expected owner")[0]
    after = {s: r.name for r in streams if r.op != "delete" for s in r.new.get("subjects") or []}
    owned_after = {r.name: list(r.new.get("subjects") or []) for r in streams if r.op != "delete"}
    kept = set()
    for res in summary.resources:
        if res.kind != "consumer" or res.op == "delete" or _stream_of(res) not in owned_after:
            continue
        filters = res.new.get("filter_subjects") or []
        if filters and not any(subjects_overlap(f, s) for f in filters for s in owned_after[_stream_of(res)]):
            kept.add((_durable(res), _stream_of(res)))
    return Ownership(before, after,
                     frozenset(r.name for r in streams if r.op in ("create", "import")),
                     frozenset(r.name for r in streams if r.op == "delete"),
                     frozenset(kept), frozenset(r.name for r in streams))


def plan_ownership(report: PlanReport) -> Ownership:
    """Subject ownership now (live) and in the planned phase, from `eventbus plan`'s report.

    A durable is kept to drain when it leaves its stream with unprocessed messages,
    the rule the program applies (topology.plan).
    """
    kept = {(c.durable, c.stream) for c in report.consumers
            if c.stream and c.stream != c.then and (c.pending or 0) + (c.ack_pending or 0) > 0}
    named = {o.now for o in report.subjects if o.now} | {s.name for s in report.streams if s.action == "keep"}
    return Ownership(
        before={o.subject: o.now for o in report.subjects},
        after={o.subject: o.then for o in report.subjects},
        created=frozenset(s.name for s in report.streams if s.action == "create"),
        deleted=frozenset(s.name for s in report.streams if s.action == "remove"),
        kept=frozenset(kept),
        streams=frozenset(named),
    )


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: quotes as entities, nothing that ends the label."""
    return text.replace('"', "#quot;").replace("\n", " ")


#: The node for "no stream" (a subject that nobody owns before or after).
NO_STREAM = "none"


def ownership_mermaid(own: Ownership) -> str:
    """A Mermaid flowchart of `own`: each stream a node (with the subjects it keeps, and
    whether it is new, deleted or left owning no subjects), each moving subject a
    labelled edge from its old owner to its new one, each durable kept to drain a marked
    node on its stream. Deterministic: the same ownership gives the same text. Pure."""
    names = sorted({n for n in (*own.before.values(), *own.after.values()) if n}
                   | own.created | own.deleted | own.streams | {stream for _, stream in own.kept})
    ids = {name: f"s{i}" for i, name in enumerate(names)}
    lines = ["flowchart LR"]
    for name in names:
        keeps = sorted(s for s, owner in own.before.items() if owner == name and own.after.get(s) == name)
        label = [name]
        if name in own.created:
            label.append("(new)")
        elif name in own.deleted:
            label.append("(deleted)")
        elif not any(owner == name for owner in own.after.values()):
            label.append("owns no subjects")
        if keeps:
            label.append("keeps: " + ", ".join(keeps))
        lines.append(f'  {ids[name]}["{"<br/>".join(_mermaid_text(part) for part in label)}"]')
    moves = own.moves
    if any(m.source is None or m.target is None for m in moves):
        lines.append(f'  {NO_STREAM}(["(no stream)"])')
    for m in moves:
        source = ids[m.source] if m.source else NO_STREAM
        target = ids[m.target] if m.target else NO_STREAM
        lines.append(f'  {source} -->|"{_mermaid_text(m.what)}"| {target}')
    for i, (durable, stream) in enumerate(sorted(own.kept)):
        lines.append(f'  k{i}(["{_mermaid_text(durable)}<br/>kept until it drains"]) -.- {ids[stream]}')
    lines.append("  classDef new stroke-width:3px")
    lines.append("  classDef deleted stroke-dasharray:5 5")
    lines.append("  classDef kept fill:#fff4d6,stroke:#b7791f,stroke-dasharray:3 3")
    for cls, members in (("new", own.created), ("deleted", own.deleted)):
        if members:
            lines.append(f"  class {','.join(ids[n] for n in sorted(members))} {cls}")
    if own.kept:
        lines.append(f"  class {','.join(f'k{i}' for i in range(len(own.kept)))} kept")
    return "\n".join(lines) + "\n"


def ownership_section(summary: Summary) -> list[str]:
    """The report's diagram block (GitHub renders ```mermaid), or nothing when no ownership changes."""
    own = ownership(summary)
    if not own.changes:
        return []
    return ["**Subject ownership, before → after**", "", "```mermaid", *ownership_mermaid(own).splitlines(),
            "```", ""]


# -- edge --------------------------------------------------------------------------------
def run_preview(stack: str, cwd: Path | None) -> tuple[str, int, str]:
    """Run `pulumi preview --json` for `stack`: (stdout, exit code, stderr)."""
    args = ["pulumi", "preview", "--json", "--show-sames", "--non-interactive", "--stack", stack]
    if cwd is not None:
        args += ["--cwd", str(cwd)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    except OSError as exc:
        return "", CANNOT_PREVIEW, f"cannot run pulumi: {exc}"
    return done.stdout, done.returncode, done.stderr


EXIT_CODES = """\b
Exit codes:
  0  nothing destructive, or every destructive step explicitly allowed
  1  a destructive step not explicitly allowed (replace or delete of a stream,
     replace of a consumer, delete of a consumer that is not a move)
  2  the preview could not run or failed for another reason
"""


@click.command("preview-report", epilog=EXIT_CODES)
@click.option("--stack", "stack_name", metavar="NAME", help="The stack to preview (e.g. staging).")
@click.option("--cwd", type=click.Path(file_okay=False, exists=True, path_type=Path), metavar="DIR",
              help="The Pulumi project directory. [default: the current one]")
@click.option("--from-file", type=click.File("r"), metavar="FILE",
              help="Read `pulumi preview --json` output from FILE ('-' for stdin) instead of running it.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path), metavar="FILE",
              help="Also write the Markdown to FILE (e.g. for a PR comment).")
def command(stack_name: str | None, cwd: Path | None, from_file: Any, output: Path | None) -> None:
    """A `pulumi preview` as Markdown for a pull request: phase, per-resource operations and changed
    fields, subjects and consumers moving, and a warning for every destructive step."""
    if not stack_name:  # `eventbus --stack NAME preview-report` gives it to the group
        stack_name = click.get_current_context().find_root().params.get("stack_name")
    if from_file is not None:
        report = build_report(from_file.read(), 0, "", stack_name)
    elif not stack_name:
        raise click.UsageError("give --stack NAME (or --from-file FILE)")
    else:
        report = build_report(*run_preview(stack_name, cwd), stack_name)
    click.echo(report.markdown, nl=False)
    if output is not None:
        output.write_text(report.markdown, encoding="utf-8")
    sys.exit(report.exit_code)


if __name__ == "__main__":  # `python -m components.preview_report`, before it is part of `eventbus`
    command()
