"""The Pulumi program end to end, through the real CLI, against a real nats-server."""

from __future__ import annotations

import pytest

from components.nats_client import JetStream
from components.verify import stored_subjects
from tests.harness import PulumiProject

pytestmark = pytest.mark.pulumi


def test_up_phase0_then_preview_shows_no_changes_then_destroy_removes_all(project: PulumiProject, js: JetStream) -> None:
    project.preview()
    assert js.stream_names() == [], "a preview must not change the server"

    project.up()
    legacy = js.stream_info("ATHLETE_ALLY_EVENTS")
    assert legacy is not None
    assert sorted(stored_subjects(legacy["config"])) == ["athlete-ally.>", "sleep.*", "vendor.>"]
    assert legacy["config"]["compression"] == "s2"
    assert stored_subjects(js.stream_info("AA_DLQ")["config"]) == ["dlq.>"]
    assert js.consumer_info("ATHLETE_ALLY_EVENTS", "normalize-hrv-durable")["config"]["max_deliver"] == 5
    assert js.consumer_info("ATHLETE_ALLY_EVENTS", "normalize-oura") is not None
    assert project.outputs()["bindings"]["normalize-hrv-durable"]["stream"] == "ATHLETE_ALLY_EVENTS"

    done = project.preview("--expect-no-changes")
    assert done.returncode == 0

    project.destroy()
    assert js.stream_names() == []
