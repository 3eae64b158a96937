"""The Pulumi program end to end, through the real CLI, against a real nats-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.jetstream.client import ConnectionSettings, JetStream
from components.migration.verify import stored_subjects
from tests.harness import NatsServer, PulumiProject

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


def test_refresh_after_out_of_band_edit_shows_drift_and_up_restores(project: PulumiProject, js: JetStream) -> None:
    project.up()
    config = js.stream_info("AA_DLQ")["config"]
    js.stream_update({**config, "max_age": 3600 * 10**9, "metadata": {}})

    drift = project.refresh("--expect-no-changes", check=False)
    assert drift.returncode != 0
    assert "AA_DLQ" in drift.stdout and "max_age" in drift.stdout

    project.refresh()
    project.up()
    assert js.stream_info("AA_DLQ")["config"]["max_age"] == 14 * 24 * 3600 * 10**9
    assert project.preview("--expect-no-changes").returncode == 0


def test_up_after_out_of_band_delete_recreates_stream_and_consumer(project: PulumiProject, js: JetStream) -> None:
    project.up()
    js.consumer_delete("ATHLETE_ALLY_EVENTS", "normalize-oura")
    js.stream_delete("AA_DLQ")

    project.refresh()
    project.up()

    assert js.stream_info("AA_DLQ") is not None
    assert js.consumer_info("ATHLETE_ALLY_EVENTS", "normalize-oura") is not None
    assert project.preview("--expect-no-changes").returncode == 0


def test_bad_phase_fails_preview_naming_the_key_and_changes_nothing(project: PulumiProject, js: JetStream) -> None:
    project.set("phase", 7)

    done = project.preview(check=False)

    assert done.returncode != 0
    assert "aa-event-bus:phase" in done.stdout + done.stderr
    assert "less than or equal to 3" in done.stdout + done.stderr
    assert js.stream_names() == []


def test_bad_stream_override_fails_preview_naming_the_key(project: PulumiProject, js: JetStream) -> None:
    project.set("streams", {"vendor": {"name": "AA VENDOR", "maxAge": "48h"}})

    done = project.preview(check=False)

    assert done.returncode != 0
    assert "aa-event-bus:streams.vendor.name" in done.stdout + done.stderr
    assert js.stream_names() == []


@pytest.mark.parametrize("kind", ["password", "token"])
def test_credentials_are_secrets_absent_from_exported_state(tmp_path: Path, kind: str) -> None:
    password = f"s3cret-{kind}-for-test"
    auth = ["--user", "bus", "--pass", password] if kind == "password" else ["--auth", password]
    server = NatsServer(tmp_path, name="auth", extra=auth).start()
    try:
        config = {"phase": 0, "natsUrl": server.url, **({"natsUser": "bus"} if kind == "password" else {})}
        project = PulumiProject(tmp_path, config=config)
        project.set("natsPassword" if kind == "password" else "natsToken", password, secret=True)
        project.up()

        creds = {"user": "bus", "password": password} if kind == "password" else {"token": password}
        js = JetStream(ConnectionSettings(servers=server.url, **creds))
        assert js.stream_info("ATHLETE_ALLY_EVENTS") is not None
        project.refresh()  # a refresh writes what read() reports (tests/test_read_seen.py): still encrypted
        exported = project.export()
        assert password not in exported
        assert '"credentials"' in exported and "ciphertext" in exported
        assert password not in project.stack_file.read_text()
    finally:
        server.stop()


def test_preview_with_a_topology_subject_held_by_an_unmanaged_stream_fails_naming_it(
        project: PulumiProject, js: JetStream) -> None:
    js.stream_create({"name": "OTHER", "subjects": ["vendor.>"]})

    done = project.preview(check=False)

    assert done.returncode != 0
    assert "subject vendor.> is owned by OTHER, which this stack does not manage" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert js.stream_names() == ["OTHER"], "a failed preview must not change the server"
    assert stored_subjects(js.stream_info("OTHER")["config"]) == ["vendor.>"]


def test_ignore_changes_on_a_durables_start_keeps_the_start_it_was_created_with(
        tmp_path: Path, js: JetStream, nats_server: NatsServer) -> None:
    # The resources register their spec nested under one property; the engine matches ignore_changes
    # against the flat inputs in the state, so the ignored fields must still be found there.
    program = Path(__file__).parent / "fixtures" / "programs" / "ignore_changes"
    project = PulumiProject(tmp_path, namespace="ignore-changes", program=program,
                            config={"natsUrl": nats_server.url, "start": 1})
    project.up()

    project.set("start", 2)  # a later run computes another start: ignored, not a replace of the durable
    assert project.preview("--expect-no-changes", check=False).returncode == 0
    project.up()
    assert js.consumer_info("IGN", "worker")["config"]["opt_start_seq"] == 1
