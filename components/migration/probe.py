"""The routing probe and durable health: does each subject of a phase really reach the stream that should own it?

The structural verify (`components.migration.verify`) reads which stream *lists* which
subjects. A stream can list a subject and still not store it: an account
`mappings` entry, an import, a subject transform or a stale leaf node routes it
elsewhere. The probe proves routing with a real message, per subject pattern of
the phase:

1. pick a subject that the pattern covers and that no durable's filter matches
   (`vendor.>` -> `vendor._probe.<id>`, `sleep.*` -> `sleep._probe-<id>`), so no
   service bound through `components.binding` ever receives it;
2. publish it with a `Nats-Msg-Id`; the publish ack names the stream that stored
   it, which must be the phase's owner;
3. read it back by sequence (`$JS.API.STREAM.MSG.GET.<stream>`): it must be the
   probe, under the subject it was published on;
4. delete that one message (`$JS.API.STREAM.MSG.DELETE.<stream>`, `no_erase`) and
   confirm the sequence is gone (err_code 10037), so no probe stays stored.

Two cases are decided, not failed:
* a stream with `deny_delete` could never drop a probe, so it is not probed:
  a warning says routing to it is unproven (publishing would leave the probe
  stored until max_age, which the gate promises never to do);
* a stream with interest retention drops a message no consumer is interested
  in as soon as it is stored; the probe subject is chosen so that no consumer
  is, so the read-back finds nothing. The ack alone then proves routing.

Per durable, `durable_health` gives a line like `nats server check consumer`:
caught up, or draining with N pending; the stack's `probe` thresholds fail it.

Planning (`plan_probes`) and health judgement (`health_report`) are pure; the
live calls (`run_probes`, `durable_health`, `live_checks`) read and write the
server. Results become `verify.Finding`s, so the gate and `eventbus migration
verify --probe` print and judge them like the structural checks.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from components.jetstream.errors import JetStreamAPIError, NoStreamForSubject
from components.jetstream.live import LiveConsumer, LiveStream
from components.migration.topology import Topology, phase_topology
from components.migration.verify import Finding, Status
from components.spec.stack import StackConfig
from components.spec.subjects import subjects_overlap

if TYPE_CHECKING:  # the client (nats-py) loads only when a call talks to the server
    from components.jetstream.client import JetStream

#: Every probe's body starts with this, followed by the probe's Nats-Msg-Id.
BODY_PREFIX = "eventbus-probe "
#: Header naming the probe run, for anyone who finds a probe on the wire.
HEADER = "Eventbus-Probe"
#: Seconds to wait for one probe's publish ack.
PUBLISH_TIMEOUT = 5.0


# -- planning (pure) ----------------------------------------------------------------------
@dataclass(frozen=True)
class Reader:
    """A consumer whose filter decides which subjects it receives (`filters` empty: none)."""

    name: str
    filters: tuple[str, ...]

    def reads(self, subject: str) -> bool:
        return any(subjects_overlap(subject, f) for f in self.filters)


@dataclass(frozen=True)
class ProbePlan:
    """One probe: `subject` under `pattern`, expected in `stream`. `subject` None: every candidate is read
    by a consumer (`blocked_by` names them), so this pattern cannot be probed safely."""

    pattern: str
    stream: str
    subject: str | None
    msg_id: str
    blocked_by: tuple[str, ...] = ()


def probe_subject(pattern: str, prefix: str, ident: str) -> str:
    """The probe subject for `pattern`: a trailing `>` becomes `<prefix>.<ident>`, each `*` becomes the single
    token `<prefix>-<ident>`, literal tokens stay. The result always matches `pattern`."""
    tokens: list[str] = []
    for token in pattern.split("."):
        if token == ">":
            tokens += [prefix, ident]
        elif token == "*":
            tokens.append(f"{prefix}-{ident}")
        else:
            tokens.append(token)
    return ".".join(tokens)


def stack_readers(stack: StackConfig) -> list[Reader]:
    """The stack's durables, by their configured filters (the same on every stream, in every phase)."""
    return [Reader(d.durable, (d.filter_subject,)) for d in stack.table.durables]


def plan_probes(topology: Topology, prefix: str, run_id: str, readers: Sequence[Reader]) -> list[ProbePlan]:
    """One probe per subject pattern of `topology`, on a subject no reader receives. Pure."""
    plans: list[ProbePlan] = []
    for n, spec in enumerate(s for s in topology.streams if s.subjects):
        for m, pattern in enumerate(spec.subjects):
            msg_id = f"{prefix}-{run_id}-{n}-{m}"
            subject = probe_subject(pattern, prefix, run_id)
            blockers = tuple(sorted({r.name for r in readers if r.reads(subject)}))
            plans.append(ProbePlan(pattern, spec.name, None if blockers else subject, msg_id, blockers))
    return plans


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeResult:
    """What one probe found. `actual` is the stream the publish ack named; `rtt_ms` the publish round trip."""

    pattern: str
    subject: str | None
    expected: str
    actual: str | None = None
    seq: int | None = None
    rtt_ms: float | None = None
    stored_subject: str | None = None
    read_back: bool = False
    deleted: bool = False
    status: Status = "pass"
    message: str = ""

    def finding(self) -> Finding:
        return Finding(self.status, f"probe {self.subject or self.pattern}", self.message)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _retention(js: JetStream, stream: str, streams: Mapping[str, LiveStream | None]) -> str:
    if stream in streams:
        live = streams[stream]
    else:
        info = js.stream_info(stream)
        live = LiveStream.from_info(info) if info else None
    return str((live.config if live else {}).get("retention", "limits"))


def probe_one(js: JetStream, plan: ProbePlan, streams: Mapping[str, LiveStream | None]) -> ProbeResult:
    """Publish, check the owner, read back, delete and confirm, for one planned probe.

    Raises NatsConnectionError only when the server cannot be asked at all (a timeout);
    "no stream stored it" is a failed probe, not an error.
    """
    base = ProbeResult(plan.pattern, plan.subject, plan.stream)
    if plan.subject is None:
        return _replace(base, status="warn", message=(
            f"{plan.pattern} -> {plan.stream}: not probed, every probe subject is read by {', '.join(plan.blocked_by)}; "
            "set probe.prefix to a token no durable filter matches"))
    expected = streams.get(plan.stream)
    if expected and expected.config.get("deny_delete"):
        return _replace(base, status="warn", message=(
            f"{plan.pattern} -> {plan.stream}: not probed, the stream has deny_delete so a probe could never be "
            "removed; routing to it is unproven"))

    body = (BODY_PREFIX + plan.msg_id).encode()
    started = time.perf_counter()
    try:
        ack = js.publish(plan.subject, body, headers={"Nats-Msg-Id": plan.msg_id, HEADER: plan.msg_id},
                         timeout=PUBLISH_TIMEOUT)
    except NoStreamForSubject:
        return _replace(base, status="fail", message=(
            f"{plan.pattern}: no stream stored {plan.subject} (no responders), expected {plan.stream}"))
    except JetStreamAPIError as exc:
        return _replace(base, status="fail", message=f"{plan.pattern}: publishing {plan.subject} was refused: {exc}")
    rtt = round((time.perf_counter() - started) * 1000, 3)
    actual, seq = str(ack["stream"]), int(ack["seq"])
    result = _replace(base, actual=actual, seq=seq, rtt_ms=rtt)
    problems: list[str] = []
    notes: list[str] = []
    if actual != plan.stream:
        problems.append(f"{plan.subject} was stored by {actual}, expected {plan.stream} (a subject mapping, an "
                        f"import or another stream routes {plan.pattern} away from {plan.stream})")
    if ack.get("duplicate"):
        problems.append(f"{actual} reported Nats-Msg-Id {plan.msg_id} as a duplicate of seq {seq}")

    stored = js.msg_get(actual, seq)
    if stored is None:
        if _retention(js, actual, streams) == "interest":
            notes.append(f"dropped at once by {actual} (interest retention, no consumer reads the probe subject); "
                         "the ack proves routing")
        else:
            problems.append(f"seq {seq} cannot be read back from {actual}")
    elif base64.b64decode(stored.get("data") or "") != body:
        problems.append(f"seq {seq} of {actual} holds another message, not the probe (left in place)")
    else:
        subject = str(stored.get("subject"))
        result = _replace(result, stored_subject=subject, read_back=True)
        if subject != plan.subject:
            problems.append(f"stored under {subject}, not {plan.subject} (a subject transform or mapping)")
        try:
            js.msg_delete(actual, seq)
        except JetStreamAPIError as exc:
            problems.append(f"could not delete seq {seq} from {actual}: {exc.description} (err_code {exc.err_code}); "
                            "the probe stays stored until its max_age")
        else:
            if js.msg_get(actual, seq) is None:
                result = _replace(result, deleted=True)
            else:
                problems.append(f"seq {seq} is still stored in {actual} after its delete")

    if problems:
        return _replace(result, status="fail", message=f"{plan.pattern}: " + "; ".join(problems))
    done = "read back and deleted" if result.deleted else "; ".join(notes)
    return _replace(result, message=f"{plan.pattern} -> {actual}: stored as seq {seq} ({rtt:.1f} ms), {done}")


def _replace(result: ProbeResult, **changes: Any) -> ProbeResult:
    return ProbeResult(**{**asdict(result), **changes})


def live_readers(js: JetStream, stack: StackConfig) -> tuple[list[Reader], dict[str, LiveStream | None]]:
    """The stack's durables plus every consumer on the managed streams (one without a filter reads all of its
    stream's subjects), and the managed streams as the server holds them (None: absent)."""
    streams: dict[str, LiveStream | None] = {}
    for name in stack.managed_names():
        info = js.stream_info(name)
        streams[name] = LiveStream.from_info(info, js.consumer_infos(name)) if info else None
    readers = stack_readers(stack)
    for name, stream in streams.items():
        if stream is None:
            continue
        for consumer in stream.consumers.values():
            readers.append(Reader(f"{name}/{consumer.name}", consumer.reading(stream.subjects)))
    return readers, streams


def run_probes(js: JetStream, stack: StackConfig, phase: int, run_id: str | None = None) -> list[ProbeResult]:
    """Probe every subject pattern of `phase` on the live server; nothing stays stored (see the module doc)."""
    readers, streams = live_readers(js, stack)
    topology = phase_topology(stack.model_copy(update={"phase": phase}))
    plans = plan_probes(topology, stack.probe.prefix, run_id or uuid.uuid4().hex[:12], readers)
    return [probe_one(js, plan, streams) for plan in plans]


# -- durable health -------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """Health limits: a value above its limit fails the check. None: not checked."""

    max_pending: int | None = None
    max_ack_pending: int | None = None
    max_redelivered: int | None = None


@dataclass(frozen=True)
class Check:
    name: str
    value: int
    limit: int
    ok: bool

    @property
    def message(self) -> str:
        op = "<=" if self.ok else ">"
        return f"{self.name} {self.value} {op} {self.limit}" + ("" if self.ok else " (threshold exceeded)")


def health_checks(consumer: LiveConsumer, thresholds: Thresholds) -> tuple[Check, ...]:
    """One check per threshold that is set, on the consumer's pending, ack pending and redelivered counts."""
    limits = (
        ("pending", consumer.pending, thresholds.max_pending),
        ("ack pending", consumer.ack_pending, thresholds.max_ack_pending),
        ("redelivered", consumer.redelivered, thresholds.max_redelivered),
    )
    return tuple(Check(name, value, limit, value <= limit) for name, value, limit in limits if limit is not None)


@dataclass(frozen=True)
class DurableHealth:
    """One durable on the stream the phase puts it on, checked against the stack's thresholds."""

    stream: str
    durable: str
    pending: int
    ack_pending: int
    redelivered: int
    checks: tuple[Check, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def line(self) -> str:
        text = ("caught up" if not (self.pending or self.ack_pending)
                else f"draining: {self.pending} pending, {self.ack_pending} awaiting ack")
        failed = [c.message for c in self.checks if not c.ok]
        return text + (f"; {'; '.join(failed)}" if failed else "")

    def finding(self) -> Finding:
        return Finding("pass" if self.ok else "fail", f"{self.stream}/{self.durable}", f"health: {self.line}")

    def as_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "durable": self.durable, "pending": self.pending,
                "ack_pending": self.ack_pending, "redelivered": self.redelivered, "ok": self.ok, "line": self.line,
                "checks": [{**asdict(c), "message": c.message} for c in self.checks]}


def health_report(stack: StackConfig, phase: int,
                  infos: Mapping[tuple[str, str], Mapping[str, Any] | None]) -> list[DurableHealth]:
    """Health of each durable of `phase` from its consumer info (keyed by (stream, durable)). A missing
    consumer is the structural verify's finding, so it is skipped here. Pure."""
    limits = Thresholds(stack.probe.max_pending, stack.probe.max_ack_pending, stack.probe.max_redelivered)
    out: list[DurableHealth] = []
    for spec in phase_topology(stack.model_copy(update={"phase": phase})).consumers:
        info = infos.get((spec.stream, spec.durable_name))
        if info is None:
            continue
        live = LiveConsumer.from_info(info)
        out.append(DurableHealth(spec.stream, spec.durable_name, live.pending, live.ack_pending, live.redelivered,
                                 health_checks(live, limits)))
    return out


def durable_health(js: JetStream, stack: StackConfig, phase: int) -> list[DurableHealth]:
    """`health_report` on the live server."""
    topology = phase_topology(stack.model_copy(update={"phase": phase}))
    infos = {(c.stream, c.durable_name): js.consumer_info(c.stream, c.durable_name) for c in topology.consumers}
    return health_report(stack, phase, infos)


# -- both, for the gate and the CLI -----------------------------------------------------------
@dataclass(frozen=True)
class LiveReport:
    probes: tuple[ProbeResult, ...]
    health: tuple[DurableHealth, ...]

    def findings(self) -> list[Finding]:
        return [*(p.finding() for p in self.probes), *(h.finding() for h in self.health)]

    def as_dict(self) -> dict[str, Any]:
        return {"probes": [p.as_dict() for p in self.probes], "health": [h.as_dict() for h in self.health]}


def live_checks(js: JetStream, stack: StackConfig, phase: int, probes: bool = True) -> LiveReport:
    """Durable health, then (when `probes`) the routing probes, for `phase` on the live server."""
    health = durable_health(js, stack, phase)
    return LiveReport(tuple(run_probes(js, stack, phase)) if probes else (), tuple(health))
