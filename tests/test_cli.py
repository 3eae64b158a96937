"""The `eventbus` CLI against a real nats-server: each command in each phase's topology, with a missing
stream, with a backlog, and with no server at all. Most run through click's CliRunner; some through the
installed console script."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import nats
import pytest
from click.testing import CliRunner, Result

from components.cli.main import main
from components.jetstream.client import JetStream
from components.migration.topology import Topology, phase_topology
from components.spec.stack import StackConfig, parse_stack_config
from tests import harness
from tests.harness import VENV_BIN, NatsServer, PulumiProject, free_port

STACK = parse_stack_config({"phase": 0, "natsUrl": "nats://unused:4222"})
LEGACY, CORE, VENDOR, DLQ = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT", "AA_DLQ"
HRV, OURA = "normalize-hrv-durable", "normalize-oura"


# -- helpers ---------------------------------------------------------------------------
def advance(js: JetStream, phase: int, stack: StackConfig = STACK) -> Topology:
    return harness.advance(js, phase, stack)


def publish(js: JetStream, subject: str, n: int) -> None:
    for i in range(n):
        js.publish(subject, f"m{i}".encode())


def run(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--url", url, *args], env=env)


def run_json(url: str, *args: str) -> tuple[int, dict]:
    result = run(url, "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def pull_without_ack(url: str, stream: str, durable: str, n: int, nak_first: bool = False) -> None:
    """Leave `n` messages awaiting their ack (after one nak'ed delivery each when `nak_first`)."""
    async def fetch_all(sub: Any) -> list:
        # A fetch returns what is ready; redeliveries after a nak may come one by one.
        msgs: list = []
        for _ in range(10):
            if len(msgs) >= n:
                break
            msgs += await sub.fetch(n - len(msgs), timeout=2)
        return msgs

    async def go() -> None:
        nc = await nats.connect(url)
        sub = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=stream)
        msgs = await fetch_all(sub)
        if nak_first:
            for m in msgs:
                await m.nak()
            await nc.flush()
            msgs = await fetch_all(sub)
        assert len(msgs) == n
        await nc.flush()
        await nc.close()

    asyncio.run(go())


@pytest.fixture(scope="module")
def dead_url() -> str:
    """A URL nobody listens on."""
    return f"nats://127.0.0.1:{free_port()}"


# -- stream info -----------------------------------------------------------------------
@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_stream_info_each_phase_lists_every_stream_exit_0(js: JetStream, nats_server: NatsServer, phase: int) -> None:
    topo = advance(js, phase)
    code, data = run_json(nats_server.url, "stream", "info")
    assert code == 0
    streams = {s["name"]: s for s in data["streams"]}
    assert list(streams) == [LEGACY, CORE, VENDOR, DLQ], "every stream of the topology, legacy included"
    for name, row in streams.items():
        spec = topo.stream(name)
        assert row["exists"] is (spec is not None)
        if spec is not None:
            assert row["subjects"] == list(spec.subjects)
            assert (row["retention"], row["replicas"], row["storage"], row["compression"]) == ("limits", 1, "file", "s2")


def test_stream_info_missing_stream_shown_as_missing_exit_0(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 0)
    publish(js, "vendor.oura.sleep", 4)
    result = run(nats_server.url, "stream", "info")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(("AA_", "ATHLETE"))}
    assert "(missing)" in lines[CORE] and "(missing)" in lines[VENDOR]
    cells = lines[LEGACY].split()
    assert (cells[-6], cells[-4], cells[-3:]) == ("4", "B", ["2", "1", "4"]), "messages, bytes unit, consumers, seqs"
    assert "missing: AA_CORE_HOT, AA_VENDOR_HOT" in result.stdout
    code, data = run_json(nats_server.url, "stream", "info")
    legacy = data["streams"][0]
    assert (legacy["messages"], legacy["consumers"], legacy["first_seq"], legacy["last_seq"]) == (4, 2, 1, 4)
    assert legacy["bytes"] > 0


# -- consumer diagnostic ---------------------------------------------------------------
def test_consumer_diagnostic_backlog_shown_exit_0_without_thresholds(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    publish(js, "athlete-ally.hrv.raw-received", 3)
    result = run(nats_server.url, "consumer", "diagnostic", LEGACY, HRV)
    assert result.exit_code == 0, result.output
    assert "backlog: 3 pending, 0 awaiting ack" in result.stdout
    assert "athlete-ally.hrv.>" in result.stdout and "explicit" in result.stdout


def test_consumer_diagnostic_caught_up_within_thresholds_exit_0(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 2)
    code, data = run_json(nats_server.url, "consumer", "diagnostic", CORE, HRV, "--max-pending", "0",
                          "--max-ack-pending", "0", "--max-redelivered", "0")
    assert code == 0
    assert data["caught_up"] is True and data["healthy"] is True and len(data["checks"]) == 3
    c = data["consumer"]
    assert (c["filter_subjects"], c["ack_policy"], c["ack_wait"], c["max_deliver"], c["deliver_policy"]) == (
        ["athlete-ally.hrv.>"], "explicit", "1m", 5, "all")


def test_consumer_diagnostic_pending_over_threshold_exit_1(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    publish(js, "vendor.oura.sleep", 5)
    result = run(nats_server.url, "consumer", "diagnostic", VENDOR, OURA, "--max-pending", "4")
    assert result.exit_code == 1, result.output
    assert "UNHEALTHY: pending 5 > 4 (threshold exceeded)" in result.stdout
    assert run(nats_server.url, "consumer", "diagnostic", VENDOR, OURA, "--max-pending", "5").exit_code == 0


def test_consumer_diagnostic_ack_pending_and_redelivered_over_thresholds_exit_1(
        js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 2)
    publish(js, "athlete-ally.hrv.raw-received", 2)
    pull_without_ack(nats_server.url, CORE, HRV, 2, nak_first=True)
    # The pending one is published after the pulls: a fetch after the naks could take it instead of a redelivery.
    publish(js, "athlete-ally.hrv.raw-received", 1)
    code, data = run_json(nats_server.url, "consumer", "diagnostic", CORE, HRV, "--max-pending", "1",
                          "--max-ack-pending", "1", "--max-redelivered", "1")
    assert code == 1
    c = data["consumer"]
    assert (c["pending"], c["ack_pending"], c["redelivered"]) == (1, 2, 2)
    assert c["delivered_stream_seq"] == 2 and c["ack_floor_stream_seq"] == 0
    assert [(x["name"], x["ok"]) for x in data["checks"]] == [("pending", True), ("ack pending", False),
                                                               ("redelivered", False)]


def test_consumer_diagnostic_missing_consumer_exit_1_names_where_it_is(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    result = run(nats_server.url, "consumer", "diagnostic", CORE, HRV)
    assert result.exit_code == 1
    assert "stream AA_CORE_HOT not found" in result.stderr
    assert "normalize-hrv-durable exists on ATHLETE_ALLY_EVENTS" in result.stderr
    assert "Traceback" not in result.output
    code, data = run_json(nats_server.url, "consumer", "diagnostic", DLQ, HRV)
    assert code == 1
    assert (data["found"], data["stream_exists"], data["found_on"]) == (False, True, [LEGACY])


# -- migration verify ------------------------------------------------------------------
@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_migration_verify_each_phase_matching_server_passes_exit_0(
        js: JetStream, nats_server: NatsServer, phase: int) -> None:
    advance(js, phase)
    for name in {LEGACY, CORE, VENDOR} - {s.name for s in phase_topology(STACK.model_copy(update={"phase": phase})).streams}:
        js.stream_delete(name)
    result = run(nats_server.url, "migration", "verify", str(phase))
    assert result.exit_code == 0, result.output
    assert f"Phase {phase} verification PASSED" in result.stdout
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize(("live", "checked"), [(0, 1), (1, 2), (3, 2), (1, 0)])
def test_migration_verify_other_phase_fails_exit_1(js: JetStream, nats_server: NatsServer, live: int, checked: int) -> None:
    advance(js, live)
    code, data = run_json(nats_server.url, "migration", "verify", str(checked))
    assert code == 1
    assert data["phase"] == checked and data["passed"] is False and data["counts"]["fail"] >= 1


def test_migration_verify_missing_stream_fails_exit_1(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 2)
    js.stream_delete(DLQ)
    code, data = run_json(nats_server.url, "migration", "verify", "2")
    assert code == 1
    assert {"status": "fail", "target": DLQ, "message": "stream missing"} in data["findings"]


def test_migration_verify_backlog_left_in_legacy_warns_exit_0_strict_exit_1(
        js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    publish(js, "athlete-ally.hrv.raw-received", 3)
    advance(js, 2)  # hrv moves to AA_CORE_HOT; its legacy durable keeps 3 unprocessed
    result = run(nats_server.url, "migration", "verify", "2")
    assert result.exit_code == 0, result.output
    assert "left behind on ATHLETE_ALLY_EVENTS: 3 unprocessed" in result.stdout
    assert "PASSED (with warnings)" in result.stdout
    assert run(nats_server.url, "migration", "verify", "2", "--strict").exit_code == 1


# -- plan ------------------------------------------------------------------------------
def test_plan_phase0_to_1_counts_moving_messages_and_consumer_pending(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 0)
    publish(js, "vendor.oura.sleep", 4)
    publish(js, "vendor.garmin.hrv", 2)
    publish(js, "athlete-ally.hrv.raw-received", 3)
    code, data = run_json(nats_server.url, "plan", "1")
    assert code == 0
    moving = [(s["subject"], s["now"], s["then"], s["messages"]) for s in data["subjects"] if s["moves"]]
    assert moving == [("vendor.>", LEGACY, VENDOR, 6)]
    assert [(c["durable"], c["stream"], c["pending"], c["ack_pending"], c["then"]) for c in data["consumers"]] == [
        (OURA, LEGACY, 4, 0, VENDOR)]
    assert data["streams"] == [{"name": VENDOR, "action": "create", "messages": 0}]
    text = run(nats_server.url, "plan", "1").stdout
    assert "vendor.>        ATHLETE_ALLY_EVENTS  AA_VENDOR_HOT        moves          6" in text


def test_plan_same_phase_nothing_moves(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 2)
    result = run(nats_server.url, "plan", "2")
    assert result.exit_code == 0
    assert "Nothing moves" in result.stdout


def test_plan_phase2_to_3_with_legacy_backlog_keeps_legacy(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    publish(js, "athlete-ally.hrv.raw-received", 2)
    advance(js, 2)
    code, data = run_json(nats_server.url, "plan", "3")
    assert code == 0
    assert not any(s["moves"] for s in data["subjects"])
    assert data["streams"] == [{"name": LEGACY, "action": "keep", "messages": 2}]
    assert any("normalize-hrv-durable has 2 unprocessed" in n for n in data["notes"])


def test_plan_missing_streams_subjects_owned_by_nobody(js: JetStream, nats_server: NatsServer) -> None:
    code, data = run_json(nats_server.url, "plan", "0")
    assert code == 0
    assert {(s["subject"], s["now"], s["then"]) for s in data["subjects"]} == {
        ("athlete-ally.>", None, LEGACY), ("sleep.*", None, LEGACY), ("vendor.>", None, LEGACY), ("dlq.>", None, DLQ)}
    assert {s["name"] for s in data["streams"]} == {LEGACY, DLQ}


# -- no server, config -----------------------------------------------------------------
@pytest.mark.parametrize("args", [("consumer", "diagnostic", CORE, HRV), ("migration", "verify", "2"), ("plan", "1")])
def test_command_no_server_one_line_exit_2(dead_url: str, args: tuple[str, ...]) -> None:
    result = run(dead_url, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"cannot connect to NATS at {dead_url}" in result.stderr


def test_console_script_stream_info_json_and_no_server(js: JetStream, nats_server: NatsServer, dead_url: str) -> None:
    advance(js, 3)
    env = {**os.environ, "NATS_URL": nats_server.url}
    done = subprocess.run([str(VENV_BIN / "eventbus"), "stream", "info", "--json"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [s["exists"] for s in json.loads(done.stdout)["streams"]] == [False, True, True, True]
    done = subprocess.run([str(VENV_BIN / "eventbus"), "--url", dead_url, "stream", "info"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"eventbus: cannot connect to NATS at {dead_url}")


def test_stack_option_names_streams_and_url_from_stack_file(
        js: JetStream, nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = parse_stack_config({"phase": 0, "natsUrl": nats_server.url, "streams": {"legacy": {"name": "OLD_EVENTS"}}})
    advance(js, 0, stack)
    (tmp_path / "Pulumi.demo.yaml").write_text(
        "config:\n"
        '  aa-event-bus:phase: "0"\n'
        f"  aa-event-bus:natsUrl: {nats_server.url}\n"
        '  aa-event-bus:replicas: "1"\n'
        "  aa-event-bus:natsPassword:\n    secure: v1:not-decryptable\n"
        "  aa-event-bus:streams:\n    legacy:\n      name: OLD_EVENTS\n"
    )
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["--stack", "demo", "--json", "migration", "verify", "0"], env={"NATS_URL": None})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["url"] == nats_server.url
    assert {"status": "pass", "target": "OLD_EVENTS", "message": "owns athlete-ally.>, sleep.*, vendor.>"} in data["findings"]
    result = runner.invoke(main, ["--stack-config", str(tmp_path / "Pulumi.demo.yaml"), "plan", "1"], env={"NATS_URL": None})
    assert result.exit_code == 0, result.output
    assert "(the stack is at phase 0)" in result.stdout and "OLD_EVENTS" in result.stdout


def test_nats_url_env_used_when_no_url_option(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 0)
    result = CliRunner().invoke(main, ["migration", "verify", "0"], env={"NATS_URL": nats_server.url})
    assert result.exit_code == 0, result.output
    assert f"verification at {nats_server.url}" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [("config:\n  aa-event-bus:phase: \"7\"\n", "aa-event-bus:phase"), ("config: [unclosed\n", "not valid YAML")],
)
def test_stack_config_invalid_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(content)
    result = CliRunner().invoke(main, ["--stack-config", str(path), "stream", "info"])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output


def test_stack_file_missing_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--stack-config", str(tmp_path / "Pulumi.none.yaml"), "plan", "1"])
    assert result.exit_code == 2
    assert "cannot read the stack file" in result.stderr


def test_help_documents_exit_codes() -> None:
    for args in (["--help"], ["consumer", "diagnostic", "--help"], ["migration", "verify", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0
        assert "Exit codes:" in result.stdout and "2  could not check" in result.stdout


def test_help_imports_neither_pulumi_nor_the_client_nor_pydantic() -> None:
    """`eventbus --help` loads click and the CLI module only; a command imports what it needs when it runs."""
    code = ("import sys; from components.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = ('pulumi', 'grpc', 'deepdiff', 'pydantic', 'nats', 'yaml', 'components.jetstream.client',"
            " 'components.cli.diagnostics', 'components.cli.preview_report')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))")
    done = subprocess.run([str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, timeout=60,
                          check=True, cwd=Path(__file__).parent.parent)
    assert "preview-report" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_the_lazy_preview_report_with_its_own_help() -> None:
    from components.cli.main import _Group
    from components.cli.preview_report import command

    listed = " ".join(_Group.LAZY["preview-report"][2].split())
    assert listed == " ".join((command.help or "").split())


# -- with the real program -------------------------------------------------------------
def consume(url: str, stream: str, durable: str, n: int) -> None:
    """Process (ack) `n` messages, as the service would."""
    async def go() -> None:
        nc = await nats.connect(url)
        sub = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=stream)
        msgs = await sub.fetch(n, timeout=2)
        for m in msgs:
            await m.ack_sync()
        assert len(msgs) == n
        await nc.close()

    asyncio.run(go())


@pytest.mark.pulumi
def test_pulumi_phase0_plan_then_up_phase1_then_verify_passes(project: PulumiProject, js: JetStream,
                                                              nats_server: NatsServer) -> None:
    project.up()
    publish(js, "vendor.oura.sleep", 3)
    env = {**os.environ, "NATS_URL": nats_server.url}
    eventbus = str(VENV_BIN / "eventbus")
    done = subprocess.run([eventbus, "--json", "plan", "1"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [(s["subject"], s["messages"]) for s in data["subjects"] if s["moves"]] == [("vendor.>", 3)]
    assert [(c["durable"], c["pending"]) for c in data["consumers"]] == [(OURA, 3)]

    consume(nats_server.url, LEGACY, OURA, 3)
    project.set("phase", 1)
    project.up()
    done = subprocess.run([eventbus, "migration", "verify", "1"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout
    assert "Phase 1 verification PASSED" in done.stdout
    done = subprocess.run([eventbus, "migration", "verify", "2"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert "Phase 2 verification FAILED" in done.stdout


def test_preview_report_runs_as_eventbus_subcommand() -> None:
    from components.cli import preview_report

    fixture = Path(__file__).parent / "fixtures" / "previews" / "phase_2_to_1.json"
    result = CliRunner().invoke(main, ["preview-report", "--from-file", str(fixture), "--stack", "staging"])
    assert result.exit_code == preview_report.OK, result.output  # AA_CORE_HOT was empty: its delete is allowed
    assert result.stdout.startswith("### Event bus preview: `staging`, phase 2 → 1")
