"""The routing probe and durable health (components.probe): pure planning as tables, then real servers.

The live tests use the session nats-server, plus a dedicated one whose config file maps `vendor.>`
into `athlete-ally.vendor.>`, so the legacy stream stores what AA_VENDOR_HOT lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from components.cli.main import main
from components.jetstream.client import NO_MESSAGE, ConnectionSettings, JetStream
from components.jetstream.errors import ConfigError, EventBusError, JetStreamAPIError
from components.migration.probe import Reader, health_report, plan_probes, probe_subject, run_probes, stack_readers
from components.migration.topology import phase_topology
from components.migration.verify import passed, verify_phase
from components.pulumi.gate import PhaseGateProvider
from components.spec.stack import StackConfig, parse_stack_config
from components.spec.stream import StreamSpec
from components.spec.subjects import covers, subjects_overlap
from tests.harness import NatsServer, PulumiProject, advance, free_port

LEGACY, CORE, VENDOR, DLQ = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT", "AA_DLQ"
HRV, OURA = "normalize-hrv-durable", "normalize-oura"
SEED_FILTERS = ("athlete-ally.hrv.>", "vendor.oura.>")


def stack_at(url: str, phase: int = 0, **extra: object) -> StackConfig:
    return parse_stack_config({"phase": phase, "natsUrl": url, **extra})


def gate_props(stack: StackConfig, url: str) -> dict:
    return {"phase": stack.phase, "stack": stack.model_dump(mode="json"), "verify": True, "hook": "",
            "servers": [url], "credentials": {}}


def get_status(js: JetStream, stream: str, seq: int) -> int | None:
    """None when `stream` holds a message at `seq`, else the server's err_code."""
    try:
        js.request(f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq}, stream=stream)
    except JetStreamAPIError as exc:
        return exc.err_code
    return None


def stream_counts(js: JetStream) -> dict[str, int]:
    return {name: int(js.stream_info(name)["state"]["messages"]) for name in js.stream_names()}


# -- planning (pure) ----------------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "subject"), [
    ("vendor.>", "vendor._probe.r1"),
    ("athlete-ally.>", "athlete-ally._probe.r1"),
    ("dlq.>", "dlq._probe.r1"),
    ("sleep.*", "sleep._probe-r1"),
    ("a.*.b.>", "a._probe-r1.b._probe.r1"),
    ("exact.subject", "exact.subject"),
])
def test_probe_subject_each_pattern_shape_gives_a_subject_the_pattern_covers(pattern: str, subject: str) -> None:
    assert probe_subject(pattern, "_probe", "r1") == subject
    assert covers(pattern, subject)


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_plan_probes_each_phase_one_probe_per_pattern_to_its_owner_and_none_reaches_the_seeds_durables(
        phase: int) -> None:
    stack = stack_at("nats://unused:4222", phase)
    topology = phase_topology(stack)
    plans = plan_probes(topology, "_probe", "r1", stack_readers(stack))

    assert sorted(p.pattern for p in plans) == sorted(s for spec in topology.streams for s in spec.subjects)
    for plan in plans:
        assert plan.subject is not None and covers(plan.pattern, plan.subject)
        assert plan.stream == topology.owner(plan.subject)
        assert not any(subjects_overlap(plan.subject, f) for f in SEED_FILTERS), plan
    assert len({p.msg_id for p in plans}) == len(plans)


def test_plan_probes_configured_prefix_used_in_every_subject() -> None:
    stack = stack_at("nats://unused:4222", 2, probe={"prefix": "canary"})
    plans = plan_probes(phase_topology(stack), stack.probe.prefix, "r1", stack_readers(stack))
    assert {p.subject for p in plans} == {"athlete-ally.canary.r1", "sleep.canary-r1", "vendor.canary.r1", "dlq.canary.r1"}


def test_plan_probes_reader_covering_the_probe_subject_blocks_that_pattern_only() -> None:
    topology = phase_topology(stack_at("nats://unused:4222", 1))
    readers = [Reader("AA_VENDOR_HOT/audit", ("vendor.>",)), Reader("legacy/x", ("sleep._probe-r1",))]
    blocked = {p.pattern: p.blocked_by for p in plan_probes(topology, "_probe", "r1", readers) if p.subject is None}
    assert blocked == {"vendor.>": ("AA_VENDOR_HOT/audit",), "sleep.*": ("legacy/x",)}


@pytest.mark.parametrize("prefix", ["a.b", "", "_pro*be", "x y", ">"])
def test_stack_config_probe_prefix_not_one_token_fails_naming_the_key(prefix: str) -> None:
    with pytest.raises(ConfigError) as refused:
        stack_at("nats://unused:4222", probe={"prefix": prefix})
    assert refused.value.key == "aa-event-bus:probe.prefix"
    assert "one subject token" in str(refused.value)


@pytest.mark.parametrize(("probe", "key", "message"), [
    ({"maxPending": -1}, "aa-event-bus:probe.maxPending", "greater than or equal to 0"),
    ("not json", "aa-event-bus:probe", 'expected a mapping such as {"prefix": "_probe"'),
])
def test_stack_config_probe_bad_value_fails_naming_the_key(probe: object, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        stack_at("nats://unused:4222", probe=probe)
    assert refused.value.key == key
    assert message in str(refused.value)


def test_stack_config_probe_given_as_json_text_parses_like_a_mapping() -> None:
    stack = stack_at("nats://unused:4222", probe='{"enabled": false, "maxPending": 3}')
    assert (stack.probe.enabled, stack.probe.max_pending, stack.probe.prefix) == (False, 3, "_probe")


def test_health_report_pending_over_threshold_fails_and_says_draining() -> None:
    stack = stack_at("nats://unused:4222", 1, probe={"maxPending": 4, "maxAckPending": 10})
    infos = {
        (LEGACY, HRV): {"name": HRV, "num_pending": 0, "num_ack_pending": 0, "config": {}},
        (VENDOR, OURA): {"name": OURA, "num_pending": 5, "num_ack_pending": 2, "config": {}},
    }
    health = {h.durable: h for h in health_report(stack, 1, infos)}
    assert (health[HRV].ok, health[HRV].line) == (True, "caught up")
    assert health[OURA].ok is False
    assert health[OURA].line == "draining: 5 pending, 2 awaiting ack; pending 5 > 4 (threshold exceeded)"
    assert health[OURA].finding().status == "fail"


# -- live probes on the session server --------------------------------------------------------
@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_run_probes_each_phase_land_in_the_expected_streams_and_leave_nothing_stored(
        js: JetStream, nats_server: NatsServer, phase: int) -> None:
    stack = stack_at(nats_server.url, phase)
    topology = advance(js, phase, stack)
    js.publish("vendor.oura.sleep", b"real work")  # a durable with a backlog must keep exactly that backlog
    before = stream_counts(js)
    pending = {(c.stream, c.durable_name): js.consumer_info(c.stream, c.durable_name)["num_pending"]
               for c in topology.consumers}

    results = run_probes(js, stack, phase)

    assert sorted(r.pattern for r in results) == sorted(s for spec in topology.streams for s in spec.subjects)
    for r in results:
        assert r.status == "pass", r.message
        assert r.actual == r.expected == topology.owner(r.pattern)
        assert (r.read_back, r.deleted, r.stored_subject) == (True, True, r.subject)
        assert r.seq is not None and r.rtt_ms is not None and r.rtt_ms > 0
        assert get_status(js, r.actual, r.seq) == NO_MESSAGE
    assert stream_counts(js) == before
    assert {k: js.consumer_info(*k)["num_pending"] for k in pending} == pending


def test_run_probes_subject_no_stream_stores_fails_naming_the_expected_stream(
        js: JetStream, nats_server: NatsServer) -> None:
    js.stream_create(StreamSpec(name=DLQ, subjects=["dlq.>"]).wire())
    results = {r.pattern: r for r in run_probes(js, stack_at(nats_server.url), 0)}
    assert results["dlq.>"].status == "pass"
    assert results["vendor.>"].status == "fail"
    assert results["vendor.>"].message.startswith("vendor.>: no stream stored vendor._probe.")
    assert results["vendor.>"].message.endswith(f"(no responders), expected {LEGACY}")


def test_run_probes_deny_delete_stream_is_not_probed_warns_and_stores_nothing(
        js: JetStream, nats_server: NatsServer) -> None:
    stack = stack_at(nats_server.url)
    advance(js, 0, stack)
    js.stream_update({**StreamSpec(name=DLQ, subjects=["dlq.>"]).wire(), "deny_delete": True})

    results = {r.pattern: r for r in run_probes(js, stack, 0)}

    dlq = results["dlq.>"]
    assert (dlq.status, dlq.seq) == ("warn", None)
    assert "the stream has deny_delete so a probe could never be removed" in dlq.message
    assert js.stream_info(DLQ)["state"]["last_seq"] == 0
    assert all(r.status == "pass" for p, r in results.items() if p != "dlq.>")


def test_run_probes_interest_retention_stream_drops_the_probe_at_once_and_the_ack_passes(
        js: JetStream, nats_server: NatsServer) -> None:
    stack = stack_at(nats_server.url)
    js.stream_create({**StreamSpec(name=DLQ, subjects=["dlq.>"]).wire(), "retention": "interest"})
    js.consumer_upsert(DLQ, {"durable_name": "dlq-reader", "ack_policy": "explicit",
                             "filter_subject": "dlq.normalize.>"}, "create")

    dlq = next(r for r in run_probes(js, stack, 0) if r.pattern == "dlq.>")

    assert (dlq.status, dlq.actual, dlq.read_back) == ("pass", DLQ, False)
    assert "dropped at once by AA_DLQ (interest retention" in dlq.message
    assert js.stream_info(DLQ)["state"]["messages"] == 0


def test_run_probes_workqueue_stream_keeps_the_probe_until_deleted_and_passes(
        js: JetStream, nats_server: NatsServer) -> None:
    js.stream_create({**StreamSpec(name=DLQ, subjects=["dlq.>"]).wire(), "retention": "workqueue"})
    js.consumer_upsert(DLQ, {"durable_name": "dlq-worker", "ack_policy": "explicit",
                             "filter_subject": "dlq.normalize.>"}, "create")

    dlq = next(r for r in run_probes(js, stack_at(nats_server.url), 0) if r.pattern == "dlq.>")

    assert (dlq.status, dlq.read_back, dlq.deleted) == ("pass", True, True), dlq.message
    assert js.stream_info(DLQ)["state"]["messages"] == 0
    assert js.consumer_info(DLQ, "dlq-worker")["num_pending"] == 0


def test_run_probes_stream_transforming_its_subjects_fails_and_still_removes_the_probe(
        js: JetStream, nats_server: NatsServer) -> None:
    js.stream_create({**StreamSpec(name=DLQ, subjects=["dlq.>"]).wire(),
                      "subject_transform": {"src": "dlq.>", "dest": "dead.>"}})

    dlq = next(r for r in run_probes(js, stack_at(nats_server.url), 0, run_id="t1") if r.pattern == "dlq.>")

    assert dlq.status == "fail"
    assert "stored under dead._probe.t1, not dlq._probe.t1 (a subject transform or mapping)" in dlq.message
    assert dlq.deleted is True and js.stream_info(DLQ)["state"]["messages"] == 0


def test_run_probes_consumer_without_filter_on_a_stream_blocks_its_patterns_and_publishes_nothing(
        js: JetStream, nats_server: NatsServer) -> None:
    stack = stack_at(nats_server.url)
    advance(js, 0, stack)
    js.consumer_upsert(DLQ, {"durable_name": "archiver", "ack_policy": "explicit"}, "create")

    dlq = next(r for r in run_probes(js, stack, 0) if r.pattern == "dlq.>")

    assert dlq.status == "warn" and "every probe subject is read by AA_DLQ/archiver" in dlq.message
    assert js.consumer_info(DLQ, "archiver")["num_pending"] == 0


# -- the gate --------------------------------------------------------------------------------
def test_gate_matching_server_records_each_probe_and_health_line(js: JetStream, nats_server: NatsServer) -> None:
    stack = stack_at(nats_server.url, 1)
    advance(js, 1, stack)

    outs = PhaseGateProvider().create(gate_props(stack, nats_server.url)).outs

    assert [(p["pattern"], p["expected"], p["actual"]) for p in outs["probes"]] == [
        ("athlete-ally.>", LEGACY, LEGACY), ("sleep.*", LEGACY, LEGACY), ("vendor.>", VENDOR, VENDOR), ("dlq.>", DLQ, DLQ)]
    assert all(p["deleted"] and p["seq"] >= 1 for p in outs["probes"])
    assert outs["health"] == [f"{LEGACY}/{HRV}: caught up", f"{VENDOR}/{OURA}: caught up"]


def test_gate_durable_backlog_over_threshold_fails_up_naming_the_durable(js: JetStream, nats_server: NatsServer) -> None:
    stack = stack_at(nats_server.url, 1, probe={"maxPending": 2})
    advance(js, 1, stack)
    for n in range(3):
        js.publish("vendor.oura.sleep", f"m{n}".encode())

    with pytest.raises(EventBusError) as refused:
        PhaseGateProvider().create(gate_props(stack, nats_server.url))

    assert f"FAIL {VENDOR}/{OURA}: health: draining: 3 pending, 0 awaiting ack; pending 3 > 2" in str(refused.value)
    relaxed = stack_at(nats_server.url, 1, probe={"maxPending": 3})
    assert PhaseGateProvider().create(gate_props(relaxed, nats_server.url)).outs["health"][1] == (
        f"{VENDOR}/{OURA}: draining: 3 pending, 0 awaiting ack")


def test_gate_probe_disabled_publishes_nothing(js: JetStream, nats_server: NatsServer) -> None:
    stack = stack_at(nats_server.url, 0, probe={"enabled": False})
    advance(js, 0, stack)
    outs = PhaseGateProvider().create(gate_props(stack, nats_server.url)).outs
    assert outs["probes"] == []
    assert js.stream_info(LEGACY)["state"]["last_seq"] == 0


# -- a server whose account maps the moving subject elsewhere ------------------------------------
@pytest.fixture(scope="module")
def mapping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    workdir = tmp_path_factory.mktemp("mapping")
    conf = workdir / "server.conf"
    conf.write_text('mappings = {\n  "vendor.>": "athlete-ally.vendor.>"\n}\n')
    server = NatsServer(workdir, name="mapping", extra=["-c", str(conf)]).start()
    yield server
    server.stop()


@pytest.fixture
def mapped_js(mapping_server: NatsServer) -> JetStream:
    """Phase 1 applied on the mapping server: AA_VENDOR_HOT lists vendor.>, the account routes it to legacy."""
    client = JetStream(ConnectionSettings(servers=mapping_server.url))
    for name in client.stream_names():
        client.stream_delete(name)
    advance(client, 1, stack_at(mapping_server.url, 1))
    return client


def test_probe_account_mapping_moving_subject_elsewhere_fails_naming_both_streams(
        mapped_js: JetStream, mapping_server: NatsServer) -> None:
    stack = stack_at(mapping_server.url, 1)
    assert passed(verify_phase(mapped_js, stack, 1)), "the structure alone looks right"

    vendor = next(r for r in run_probes(mapped_js, stack, 1, run_id="m1") if r.pattern == "vendor.>")

    assert (vendor.status, vendor.expected, vendor.actual) == ("fail", VENDOR, LEGACY)
    assert f"vendor._probe.m1 was stored by {LEGACY}, expected {VENDOR}" in vendor.message
    assert vendor.stored_subject == "athlete-ally.vendor._probe.m1" and vendor.deleted is True
    assert mapped_js.stream_info(LEGACY)["state"]["messages"] == 0


def test_gate_account_mapping_fails_up_naming_both_streams(mapped_js: JetStream, mapping_server: NatsServer) -> None:
    with pytest.raises(EventBusError) as refused:
        PhaseGateProvider().create(gate_props(stack_at(mapping_server.url, 1), mapping_server.url))
    text = str(refused.value)
    assert text.startswith("phase 1 probe failed on")
    assert f"was stored by {LEGACY}, expected {VENDOR}" in text


# -- eventbus migration verify --probe ----------------------------------------------------------
def test_migration_verify_probe_matching_server_exit_0_json_carries_each_probe(
        js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 2, stack_at(nats_server.url, 2))

    result = CliRunner().invoke(main, ["--url", nats_server.url, "--json", "migration", "verify", "2", "--probe"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True
    probes = {p["pattern"]: p for p in data["probes"]}
    assert {k: (p["expected"], p["actual"]) for k, p in probes.items()} == {
        "athlete-ally.>": (CORE, CORE), "sleep.*": (CORE, CORE), "vendor.>": (VENDOR, VENDOR), "dlq.>": (DLQ, DLQ)}
    for p in probes.values():
        assert p["subject"].startswith(p["pattern"].rstrip(">*")) and p["seq"] >= 1 and p["rtt_ms"] > 0
    assert [(h["durable"], h["line"]) for h in data["health"]] == [(HRV, "caught up"), (OURA, "caught up")]
    text = CliRunner().invoke(main, ["--url", nats_server.url, "migration", "verify", "2", "--probe"]).stdout
    assert "vendor.> -> AA_VENDOR_HOT: stored as seq" in text and "read back and deleted" in text


def test_migration_verify_probe_mapping_server_exit_1_names_both_streams(
        mapped_js: JetStream, mapping_server: NatsServer) -> None:
    plain = CliRunner().invoke(main, ["--url", mapping_server.url, "migration", "verify", "1"])
    assert plain.exit_code == 0, "without --probe only the structure is checked"

    result = CliRunner().invoke(main, ["--url", mapping_server.url, "--json", "migration", "verify", "1", "--probe"])

    assert result.exit_code == 1, result.output
    vendor = next(p for p in json.loads(result.stdout)["probes"] if p["pattern"] == "vendor.>")
    assert (vendor["expected"], vendor["actual"], vendor["status"]) == (VENDOR, LEGACY, "fail")


def test_migration_verify_probe_no_server_exit_2() -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["--url", dead, "migration", "verify", "1", "--probe"])
    assert result.exit_code == 2
    assert f"cannot connect to NATS at {dead}" in result.stderr



# -- through the real Pulumi program ----------------------------------------------------------
@pytest.mark.pulumi
def test_pulumi_up_probe_settings_from_the_stack_file_drive_the_gate(project: PulumiProject, js: JetStream) -> None:
    project.up()
    for n in range(2):
        js.publish("vendor.oura.sleep", f"m{n}".encode())
    project.set("probe", {"prefix": "canary", "maxPending": 1})

    failed = project.up(check=False)

    assert failed.returncode != 0
    assert f"FAIL {LEGACY}/{OURA}: health: draining: 2 pending, 0 awaiting ack; pending 2 > 1" in failed.stdout + failed.stderr
    project.set("probe", {"prefix": "canary", "maxPending": 2})
    project.up()
    resources = json.loads(project.export())["deployment"]["resources"]
    gate = next(r for r in resources if r["urn"].endswith("::phase-gate-event-bus"))
    assert sorted(p["subject"].split(".")[1].split("-")[0] for p in gate["outputs"]["probes"]) == ["canary"] * 4
    assert all(p["actual"] == p["expected"] and p["deleted"] for p in gate["outputs"]["probes"])
