"""The phase gate: verification of the applied phase on the live server, and the rollout hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.jetstream.client import JetStream
from components.jetstream.errors import EventBusError
from components.pulumi.gate import PhaseGateProvider
from components.spec.stack import parse_stack_config
from components.spec.stream import StreamSpec
from tests.harness import NatsServer, PulumiProject


def gate_props(url: str, phase: int, hook: str = "") -> dict:
    stack = parse_stack_config({"phase": phase, "natsUrl": url})
    return {"phase": phase, "stack": stack.model_dump(mode="json"), "verify": True, "hook": hook,
            "servers": [url], "credentials": {}}


def test_gate_refuses_a_server_that_does_not_match_the_phase_and_lists_why(js: JetStream, nats_server: NatsServer) -> None:
    js.stream_create(StreamSpec(name="ATHLETE_ALLY_EVENTS", subjects=["athlete-ally.>", "sleep.*", "vendor.>"]).wire())

    with pytest.raises(EventBusError) as refused:
        PhaseGateProvider().create(gate_props(nats_server.url, 1))

    text = str(refused.value)
    assert "phase 1 verification failed" in text
    assert "FAIL AA_VENDOR_HOT: stream missing" in text
    assert "FAIL ATHLETE_ALLY_EVENTS: owns ['athlete-ally.>', 'sleep.*', 'vendor.>']" in text


def test_gate_reruns_only_when_the_phase_or_settings_change(nats_server: NatsServer) -> None:
    gate = PhaseGateProvider()
    same = gate_props(nats_server.url, 1)

    assert gate.diff("g", same, gate_props(nats_server.url, 1)).changes is False
    assert gate.diff("g", same, gate_props(nats_server.url, 2)).changes is True


@pytest.mark.pulumi
def test_rollout_hook_runs_after_the_phase_is_applied_and_a_failing_hook_fails_up(
    project: PulumiProject, js: JetStream, tmp_path: Path) -> None:
    marker = tmp_path / "restarted"
    project.set("rolloutHooks", {"1": f"echo restarted-for-phase-1 > {marker}", "2": "echo cannot restart >&2; exit 3"})
    project.up()
    assert not marker.exists()

    project.set("phase", 1)
    project.up()
    assert marker.read_text().strip() == "restarted-for-phase-1"

    project.set("phase", 2)
    failed = project.up(check=False)
    assert failed.returncode != 0
    assert "rollout hook for phase 2 failed (exit 3)" in failed.stdout + failed.stderr
    assert "cannot restart" in failed.stdout + failed.stderr


@pytest.mark.parametrize(("key", "value", "changes_it"), [
    ("drainTimeout", "5m", False),
    ("claimRetryTimeout", "90s", False),
    ("allowDataLoss", ["ATHLETE_ALLY_EVENTS"], False),
    ("maxBytes", 1 << 30, False),
    ("verify", False, False),
    ("rolloutHooks", {"1": "true"}, False),
    ("replicas", 3, True),
    ("phase", 2, True),
])
def test_gate_stack_input_leaves_out_what_it_does_not_verify(key: str, value: object, changes_it: bool) -> None:
    from components.pulumi.gate import unverified_fields

    first = parse_stack_config({"phase": 1, "natsUrl": "nats://127.0.0.1:4222"})
    other = parse_stack_config({"phase": 1, "natsUrl": "nats://127.0.0.1:4222", key: value})

    skip = unverified_fields()
    assert (first.model_dump(mode="json", exclude=skip) != other.model_dump(mode="json", exclude=skip)) is changes_it

