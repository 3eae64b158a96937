"""Migration verification: does the live server match a phase? (The seeds' migration-verify, corrected.)

The expected state comes from `phase_topology`, the same function that drives
`pulumi up`, so the check and the plan cannot disagree. Compared with the
seeds: the phase number is real, a connection failure is a failure, "owns no
subjects" means the server stores none (not `[<stream name>]`), consumers are
looked up on the stream that should hold them, and a backlog left on a stream
a durable has moved away from is reported.

Compute here (`verify_phase` returns findings); format and exit codes at the edge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from components.jetstream.client import JetStream
from components.migration.topology import phase_topology
from components.spec.stack import StackConfig
from components.spec.stream import stored_subjects

__all__ = ["Finding", "passed", "stored_subjects", "verify_phase"]

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    status: Status
    target: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def verify_phase(js: JetStream, stack: StackConfig, phase: int) -> list[Finding]:
    """Compare the live server with `phase`'s topology. Never raises for a missing object."""
    expected = phase_topology(stack.model_copy(update={"phase": phase}))
    findings: list[Finding] = []
    infos: dict[str, dict | None] = {name: js.stream_info(name) for name in stack.managed_names()}

    for spec in expected.streams:
        info = infos.get(spec.name)
        if info is None:
            findings.append(Finding("fail", spec.name, "stream missing"))
            continue
        have = sorted(stored_subjects(info["config"]))
        want = sorted(spec.subjects)
        if have == want:
            findings.append(Finding("pass", spec.name, f"owns {', '.join(want)}" if want else "owns no subjects"))
        elif not want and have == [spec.name]:
            findings.append(Finding("fail", spec.name, f"should own no subjects but owns its own name {have} (the server's default for an empty list)"))
        else:
            findings.append(Finding("fail", spec.name, f"owns {have or 'nothing'}, expected {want or 'nothing'}"))

    # Every subject of the phase has exactly the expected owner (a missing one refuses publishes).
    for spec in expected.streams:
        for subject in spec.subjects:
            owners = js.stream_names(subject)
            if owners == [spec.name]:
                continue
            findings.append(Finding("fail", f"subject {subject}", (
                f"owned by {', '.join(owners)}, expected {spec.name}" if owners else
                f"no stream owns it (expected {spec.name}): publishes are refused. `pulumi up` claims it first")))

    for cspec in expected.consumers:
        if infos.get(cspec.stream) is None:
            findings.append(Finding("fail", f"{cspec.stream}/{cspec.durable_name}", "stream missing, so the consumer is too"))
            continue
        info = js.consumer_info(cspec.stream, cspec.durable_name)
        if info is None:
            findings.append(Finding("fail", f"{cspec.stream}/{cspec.durable_name}", "consumer missing"))
        else:
            findings.append(Finding("pass", f"{cspec.stream}/{cspec.durable_name}", f"consumer present, {info.get('num_pending', 0)} pending"))

    expected_names = {s.name for s in expected.streams}
    homes = {(c.stream, c.durable_name) for c in expected.consumers}
    durables = {d.durable for d in stack.table.durables}
    for name, info in infos.items():
        if info is None:
            if name not in expected_names:
                findings.append(Finding("pass", name, "absent, as expected"))
            continue
        if name not in expected_names:
            owned = stored_subjects(info["config"])
            msgs = info["state"]["messages"]
            if owned:
                findings.append(Finding("fail", name, f"should not exist in phase {phase} and still owns {owned}"))
            else:
                findings.append(Finding("warn", name, f"still present, owning no subjects, with {msgs} messages (kept until drained or allowed to go)"))
        for consumer in js.consumer_infos(name):
            durable = consumer["name"]
            if durable not in durables or (name, durable) in homes:
                continue
            backlog = int(consumer.get("num_pending", 0)) + int(consumer.get("num_ack_pending", 0))
            status: Status = "warn"
            findings.append(Finding(status, f"{name}/{durable}", f"left behind on {name}: {backlog} unprocessed (backlog still in the old stream)" if backlog else f"left behind on {name}, drained"))
    return findings


def passed(findings: list[Finding]) -> bool:
    return not any(f.status == "fail" for f in findings)
