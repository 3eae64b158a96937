"""Migration verification: does the live server match a phase?

The expected state comes from `phase_topology`, the same function that drives
`pulumi up`, so the check and the plan cannot disagree. A connection failure
is a failure; "owns no subjects" means the server stores none (not `[<stream
name>]`); consumers are looked up on the stream that should hold them; a
backlog left on a stream a durable has moved away from is reported.

Compute here (`verify_phase` returns findings); format and exit codes at the edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from components.jetstream.live import LiveConsumer, LiveStream
from components.migration.topology import phase_topology
from components.spec.stack import StackConfig
from components.spec.stream import stored_subjects

if TYPE_CHECKING:  # the client (nats-py) loads only when a call talks to the server
    from components.jetstream.client import JetStream

__all__ = ["Finding", "ownership", "passed", "stored_subjects", "verify_phase"]

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    status: Status
    target: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def ownership(js: JetStream, subjects: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """subject -> the streams the server says own it (sorted; empty: no stream does)."""
    return {subject: tuple(sorted(js.stream_names(subject))) for subject in subjects}


def verify_phase(js: JetStream, stack: StackConfig, phase: int) -> list[Finding]:
    """Compare the live server with `phase`'s topology. Never raises for a missing object."""
    expected = phase_topology(stack.model_copy(update={"phase": phase}))
    findings: list[Finding] = []
    infos = {name: js.stream_info(name) for name in stack.managed_names()}
    streams = {name: LiveStream.from_info(info) for name, info in infos.items() if info is not None}

    for spec in expected.streams:
        live = streams.get(spec.name)
        if live is None:
            findings.append(Finding("fail", spec.name, "stream missing"))
            continue
        have = sorted(live.subjects)
        want = sorted(spec.subjects)
        if have == want:
            findings.append(Finding("pass", spec.name, f"owns {', '.join(want)}" if want else "owns no subjects"))
        elif not want and have == [spec.name]:
            findings.append(Finding("fail", spec.name, f"should own no subjects but owns its own name {have} (the server's default for an empty list)"))
        else:
            findings.append(Finding("fail", spec.name, f"owns {have or 'nothing'}, expected {want or 'nothing'}"))

    # Every subject of the phase has exactly the expected owner (a missing one refuses publishes).
    for spec in expected.streams:
        for subject, owners in ownership(js, spec.subjects).items():
            if owners == (spec.name,):
                continue
            findings.append(Finding("fail", f"subject {subject}", (
                f"owned by {', '.join(owners)}, expected {spec.name}" if owners else
                f"no stream owns it (expected {spec.name}): publishes are refused. `pulumi up` claims it first")))

    for cspec in expected.consumers:
        if cspec.stream not in streams:
            findings.append(Finding("fail", f"{cspec.stream}/{cspec.durable_name}", "stream missing, so the consumer is too"))
            continue
        info = js.consumer_info(cspec.stream, cspec.durable_name)
        if info is None:
            findings.append(Finding("fail", f"{cspec.stream}/{cspec.durable_name}", "consumer missing"))
        else:
            pending = LiveConsumer.from_info(info).pending
            findings.append(Finding("pass", f"{cspec.stream}/{cspec.durable_name}", f"consumer present, {pending} pending"))

    expected_names = {s.name for s in expected.streams}
    homes = {(c.stream, c.durable_name) for c in expected.consumers}
    durables = {d.durable for d in stack.table.durables}
    for name in infos:
        stream = streams.get(name)
        if stream is None:
            if name not in expected_names:
                findings.append(Finding("pass", name, "absent, as expected"))
            continue
        if name not in expected_names:
            owned = list(stream.subjects)
            if owned:
                findings.append(Finding("fail", name, f"should not exist in phase {phase} and still owns {owned}"))
            else:
                findings.append(Finding("warn", name, f"still present, owning no subjects, with {stream.messages} messages (kept until drained or allowed to go)"))
        for consumer in map(LiveConsumer.from_info, js.consumer_infos(name)):
            durable = consumer.name
            if durable not in durables or (name, durable) in homes:
                continue
            backlog = consumer.unprocessed
            status: Status = "warn"
            findings.append(Finding(status, f"{name}/{durable}", f"left behind on {name}: {backlog} unprocessed (backlog still in the old stream)" if backlog else f"left behind on {name}, drained"))
    return findings


def passed(findings: list[Finding]) -> bool:
    return not any(f.status == "fail" for f in findings)
