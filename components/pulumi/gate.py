"""The phase gate: after a phase is applied, verify it on the live server and run the
stack's rollout hook; a failure fails `pulumi up`.

Verification is structural (`components.verify`: which stream lists which
subjects, which durables exist), then behavioural (`components.probe`: one
probe message per subject pattern lands in the expected stream and is deleted
again; each durable's health against the stack's `probe` thresholds).

This is the job the issue gives to pulumi-command's `command.local.Command`. Its
provider plugin cannot be built here (the Go module proxy refuses
github.com/pulumi/pulumi-command/provider at every version: README,
"Toolchain"), so the gate is a dynamic resource with the same trigger: it runs
on create and whenever the phase or the stack's topology settings change.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi.dynamic as dyn

from components.jetstream.errors import EventBusError
from components.pulumi import base
from components.pulumi.inputs import GATE_INPUTS, RESOURCES

if TYPE_CHECKING:  # the stack's model loads in the provider only when the gate runs (a diff needs none of it)
    from components.jetstream.settings import ConnectionSettings
    from components.spec.stack import StackConfig

HOOK_TIMEOUT = 600

#: Stack fields no verification or probe reads: changing one must not rerun the rollout hook.
UNVERIFIED = frozenset({"max_bytes"})


def unverified_fields() -> frozenset[str]:
    """The stack fields left out of the gate's `stack` input: those it does not verify, and
    those the resources carry as their own inputs (the gate's own `verify` and `hook` among them)."""
    return UNVERIFIED.union(*(r.stack_fields() for r in RESOURCES))


def _run(props: dict[str, Any]) -> dict[str, Any]:
    # The verification and the probes (and the NATS client) load when the gate runs, not for a diff.
    from components.migration.probe import live_checks
    from components.migration.verify import passed, verify_phase
    from components.spec.stack import StackConfig

    stack = StackConfig.model_validate(GATE_INPUTS.value(props, "stack"))
    phase = int(GATE_INPUTS.value(props, "phase"))
    servers = ", ".join(GATE_INPUTS.value(props, "servers"))
    outs: dict[str, Any] = {**GATE_INPUTS.stored(props), "checks": 0, "warnings": [], "probes": [], "health": []}
    if GATE_INPUTS.value(props, "verify"):
        js = base.jetstream(props)
        findings = verify_phase(js, stack, phase)
        if not passed(findings):
            lines = "\n".join(f"  {f.status.upper():4} {f.target}: {f.message}" for f in findings if f.status != "pass")
            raise EventBusError(f"phase {phase} verification failed on {servers}:\n{lines}")
        # Structure first, then behaviour: one real message per subject pattern, and each durable's health.
        live = live_checks(js, stack, phase, probes=stack.probe.enabled)
        live_findings = live.findings()
        if not passed(live_findings):
            lines = "\n".join(f"  {f.status.upper():4} {f.target}: {f.message}" for f in live_findings if f.status != "pass")
            raise EventBusError(f"phase {phase} probe failed on {servers}:\n{lines}")
        findings = [*findings, *live_findings]
        outs["checks"] = len(findings)
        outs["warnings"] = [f"{f.target}: {f.message}" for f in findings if f.status == "warn"]
        outs["probes"] = [p.as_dict() for p in live.probes]
        outs["health"] = [f"{h.stream}/{h.durable}: {h.line}" for h in live.health]
    hook = GATE_INPUTS.value(props, "hook")
    if hook:
        done = subprocess.run(hook, shell=True, capture_output=True, text=True, timeout=HOOK_TIMEOUT, check=False)
        if done.returncode:
            raise EventBusError(
                f"rollout hook for phase {phase} failed (exit {done.returncode}): {hook}\n{done.stderr.strip()[-2000:]}"
            )
    return outs


class PhaseGateProvider(dyn.ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        return dyn.CreateResult(f"phase-gate-{props['phase']}", _run(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        return dyn.DiffResult(changes=bool(GATE_INPUTS.changed(olds, news, base.unknown)), replaces=[])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        return dyn.UpdateResult(_run(news))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        return dyn.ReadResult(id_, props, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class PhaseGate(dyn.Resource, module="jetstream", name="PhaseGate"):
    """Verifies the applied phase (and runs its rollout hook) once everything else is applied."""

    checks: pulumi.Output[int]
    warnings: pulumi.Output[list[str]]
    #: Each routing probe: pattern, subject, expected and actual stream, seq, rtt_ms (components.probe).
    probes: pulumi.Output[list[dict]]
    health: pulumi.Output[list[str]]

    def __init__(self, name: str, stack: StackConfig, connection: ConnectionSettings,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        from components.spec.stack import ProbeSettings

        # What the gate does not verify stays out of its input: changing it must not rerun the rollout hook.
        skip = set(unverified_fields())
        if stack.probe == ProbeSettings():
            # Default probe settings parse back the same when left out, and a stack applied before the
            # probe existed then sees no change to its gate.
            skip.add("probe")
        props = GATE_INPUTS.register({
            "phase": stack.phase,
            "stack": stack.model_dump(mode="json", exclude=skip),
            "verify": stack.verify,
            "hook": stack.rollout_hooks.get(stack.phase, ""),
            **base.connection_values(connection),
        }, pulumi.Output.secret)
        super().__init__(PhaseGateProvider(), name, props, opts)
