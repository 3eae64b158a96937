"""Phase moves with `pulumi up`, forward and back, with traffic running: nothing is lost.

Real nats-server (and the 3-node cluster for production), the real Pulumi CLI,
a publisher that retries like the services do, and workers that bind through
components.binding as the normalize-service does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.cli.preview_report import render
from components.jetstream.client import ConnectionSettings, JetStream
from components.migration.probe import BODY_PREFIX
from components.migration.verify import passed, stored_subjects, verify_phase
from components.spec.stack import parse_stack_config
from tests.harness import NatsCluster, NatsServer, PulumiProject
from tests.traffic import Publisher, Recorder, wait_until

pytestmark = pytest.mark.pulumi

LEGACY, CORE, VENDOR, DLQ = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT", "AA_DLQ"
HRV, OURA = "normalize-hrv-durable", "normalize-oura"
SUBJECTS = ("athlete-ally.hrv.raw-received", "vendor.oura.sleep")


def workers(url: str, handler: Recorder) -> list:
    from components.binding import Worker

    settings = ConnectionSettings(servers=url)
    started = [
        Worker(settings, HRV, [CORE, LEGACY], handler, fetch_timeout=0.5),
        Worker(settings, OURA, [VENDOR, LEGACY], handler, fetch_timeout=0.5),
    ]
    for worker in started:
        worker.start()
    return started


def check_phase(js: JetStream, phase: int) -> None:
    """The seeds' success criteria for `phase`, as the server really stores them."""
    findings = verify_phase(js, parse_stack_config({"phase": phase, "natsUrl": "nats://x"}), phase)
    assert passed(findings), [f for f in findings if f.status == "fail"]
    if phase >= 1:
        assert js.consumer_info(VENDOR, OURA) is not None
        assert "vendor.>" not in stored_subjects((js.stream_info(LEGACY) or {"config": {}})["config"])
    if phase == 2:
        assert stored_subjects(js.stream_info(LEGACY)["config"]) == []
        assert js.consumer_info(CORE, HRV) is not None
    if phase == 3:
        assert js.stream_info(LEGACY) is None


def settle(project: PulumiProject, publisher: Publisher, seen: Recorder, timeout: float = 90) -> set[str]:
    """Wait for the workers to process everything published; re-apply so drained leftovers go."""
    def done() -> bool:
        return set(publisher.acked) <= seen.ids()

    for _ in range(3):
        if wait_until(done, timeout / 3):
            break
        project.up()
    return set(publisher.acked) - seen.ids()


def settle_then_stop(project: PulumiProject, publisher: Publisher, seen: Recorder, running: list, *,
                     reapply: bool = False) -> set[str]:
    """`settle`, then stop the workers whatever happened: the ids published but never processed.

    `reapply`: once everything is processed, one more `pulumi up` while the workers still run, so a durable
    kept at the last up because it still held messages (drained since) is removed.
    """
    try:
        missing = settle(project, publisher, seen)
        if reapply and not missing:
            project.up()
        return missing
    finally:
        for worker in running:
            worker.stop()


def gate_probes(project: PulumiProject) -> list[dict]:
    """The routing probes the phase gate ran on the last `pulumi up` (its outputs in the stack state)."""
    resources = json.loads(project.export())["deployment"]["resources"]
    gate = next(r for r in resources if r["urn"].endswith("::phase-gate-event-bus"))
    return list(gate["outputs"]["probes"])


def test_walk_0_1_2_3_2_1_0_with_traffic_processes_every_published_message(
    project: PulumiProject, js: JetStream, nats_server: NatsServer) -> None:
    project.up()
    seen = Recorder()
    running = workers(nats_server.url, seen)
    publisher = Publisher(nats_server.url, SUBJECTS, interval=0.005).start()
    probes: list[dict] = []
    try:
        for phase in (1, 2, 3, 2, 1, 0):
            if phase == 3:
                project.set("allowDataLoss", [LEGACY])  # the operator's opt-in after the monitoring period
            else:
                project.unset("allowDataLoss")
            project.set("phase", phase)
            project.up()
            check_phase(js, phase)
            assert project.outputs()["phase"] == phase
            step = gate_probes(project)
            assert len(step) == 4 and all(p["actual"] == p["expected"] and p["deleted"] for p in step), step
            probes += step
    finally:
        publisher.stop()
    missing = settle_then_stop(project, publisher, seen, running)
    assert len(publisher.acked) > 500
    assert missing == set(), f"{len(missing)} of {len(publisher.acked)} published messages were never processed"
    # The subjects really moved: messages were processed on every stream that owned them.
    streams = set().union(*seen.seen.values())
    assert {LEGACY, CORE, VENDOR} <= streams
    # The gate probed every step under traffic, and no bound worker ever received a probe.
    assert len({p["subject"] for p in probes}) == len(probes) == 24
    assert not [i for i in seen.ids() if i.startswith(BODY_PREFIX)]


def seeds_state(js: JetStream, backlog: int) -> list[str]:
    """The team's current state, created by raw API as their TypeScript event bus does."""
    js.request("$JS.API.STREAM.CREATE.ATHLETE_ALLY_EVENTS", {
        "name": LEGACY, "subjects": ["athlete-ally.>", "vendor.>", "sleep.*"], "max_age": 24 * 3600 * 10**9,
        "storage": "file", "discard": "old", "duplicate_window": 120 * 10**9, "compression": "s2", "num_replicas": 1,
    })
    for durable, subject in ((HRV, "athlete-ally.hrv.>"), (OURA, "vendor.oura.>")):
        js.request(f"$JS.API.CONSUMER.CREATE.{LEGACY}.{durable}", {"stream_name": LEGACY, "config": {
            "durable_name": durable, "ack_policy": "explicit", "max_deliver": 5, "ack_wait": 60 * 10**9,
            "filter_subject": subject}})
    ids = []
    for n in range(backlog):
        for subject in SUBJECTS:
            ident = f"backlog-{subject.split('.')[0]}-{n}"
            js.publish(subject, ident.encode(), headers={"Nats-Msg-Id": ident})
            ids.append(ident)
    return ids


def test_adopt_seeds_state_at_phase0_then_migrate_keeps_and_drains_the_backlog(
    project: PulumiProject, js: JetStream, nats_server: NatsServer) -> None:
    backlog = seeds_state(js, 40)

    preview = project.preview("--diff")
    assert "adopts existing stream ATHLETE_ALLY_EVENTS as is" in preview.stdout
    assert "adopts existing consumer ATHLETE_ALLY_EVENTS/normalize-oura as is" in preview.stdout
    project.up()
    assert js.stream_info(LEGACY)["state"]["messages"] == 80
    assert js.consumer_info(LEGACY, OURA)["num_pending"] == 40
    assert project.preview("--expect-no-changes").returncode == 0

    # Phase 1 with no service running: the old durable still holds 40 messages, so it stays.
    project.set("phase", 1)
    moved = project.up()
    assert "normalize-oura on ATHLETE_ALLY_EVENTS is kept until it drains: 40 pending" in moved.stdout
    assert js.consumer_info(LEGACY, OURA)["num_pending"] == 40
    assert js.consumer_info(VENDOR, OURA) is not None
    check_phase(js, 1)

    seen = Recorder()
    running = workers(nats_server.url, seen)
    try:
        assert wait_until(lambda: set(backlog) <= seen.ids(), 60)
        # The preview report sees the durable drained: its delete is allowed, not flagged.
        report = render(project.preview_json(), project.stack)
        assert [(d.label, d.allowed) for d in report.destructive] == [(f"consumer {LEGACY}/{OURA}", True)]
        project.up()  # drained: now the old durable goes
        assert js.consumer_info(LEGACY, OURA) is None
        project.set("phase", 2)
        project.up()
        check_phase(js, 2)
    finally:
        for worker in running:
            worker.stop()
    assert {LEGACY} == set().union(*(seen.seen[i] for i in backlog))


def preview_ops(project: PulumiProject) -> set[tuple[str, str]]:
    """(operation, resource name) for every step of a preview that is not `same`."""
    steps = project.preview_json().get("steps", [])
    return {(s["op"], s["urn"].split("::")[-1]) for s in steps if s["op"] != "same"}


def test_each_phase_preview_lists_exactly_the_changes_the_phase_implies(project: PulumiProject, js: JetStream) -> None:
    gate = "phase-gate-event-bus"
    expected = {
        0: {("create", n) for n in (LEGACY, DLQ, f"{LEGACY}/{HRV}", f"{LEGACY}/{OURA}", gate, "event-bus", "aa-event-bus-test")},
        1: {("create", VENDOR), ("update", LEGACY), ("create", f"{VENDOR}/{OURA}"), ("delete", f"{LEGACY}/{OURA}"), ("update", gate)},
        2: {("create", CORE), ("update", LEGACY), ("create", f"{CORE}/{HRV}"), ("delete", f"{LEGACY}/{HRV}"), ("update", gate)},
        3: {("delete", LEGACY), ("update", gate)},
    }
    for phase in range(4):
        project.set("phase", phase)
        assert preview_ops(project) == expected[phase], f"phase {phase}"
        project.up()
    for phase, ops in ((2, {("create", LEGACY), ("update", gate)}),
                       (1, {("update", LEGACY), ("create", f"{LEGACY}/{HRV}"), ("delete", f"{CORE}/{HRV}"),
                            ("delete", CORE), ("update", gate)})):
        project.set("phase", phase)
        assert preview_ops(project) == ops, f"back to phase {phase}"
        project.up()


@pytest.mark.cluster
def test_production_stack_with_replicas_3_walks_forward_and_back_on_the_cluster(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_js: JetStream) -> None:
    project = PulumiProject(tmp_path, stack="production", config={"phase": 0, "natsUrl": nats_cluster.url, "replicas": 3})
    for phase in (0, 1, 2, 3, 2, 1, 0):
        project.set("phase", phase)
        project.up()
        check_phase(cluster_js, phase)
        for name in cluster_js.stream_names():
            assert cluster_js.stream_info(name)["config"]["num_replicas"] == 3, name
    assert project.preview("--expect-no-changes").returncode == 0
