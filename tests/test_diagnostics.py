"""The CLI's pure compute and format functions, as tables: no server, no mocks (pure logic only)."""

from __future__ import annotations

import pytest

from components.cli import diagnostics as dx
from components.jetstream.errors import ConfigError
from components.migration.verify import Finding
from components.spec.stack import parse_stack_config
from components.spec.stream import RETIRED_FILTER

STACK = parse_stack_config({"phase": 0, "natsUrl": "nats://127.0.0.1:4223"})


def _info(name: str, subjects: list[str], messages: int = 0, retired: bool = False) -> dict:
    config: dict = {"name": name, "subjects": subjects, "retention": "limits", "num_replicas": 1, "storage": "file",
                    "compression": "s2", "max_age": 86_400_000_000_000}
    if retired:
        config["subjects"] = None
        config["sources"] = [{"name": name, "filter_subject": RETIRED_FILTER}]
    state = {"messages": messages, "bytes": messages * 100, "consumer_count": 2, "first_seq": 1 if messages else 0,
             "last_seq": messages}
    return {"config": config, "state": state}


def _consumer(stream: str, durable: str, filter_subject: str, pending: int = 0, ack_pending: int = 0,
              redelivered: int = 0) -> dx.ConsumerState:
    info = {
        "name": durable,
        "config": {"durable_name": durable, "filter_subject": filter_subject, "ack_policy": "explicit",
                   "ack_wait": 60_000_000_000, "max_deliver": 5, "deliver_policy": "all"},
        "num_pending": pending, "num_ack_pending": ack_pending, "num_redelivered": redelivered,
        "delivered": {"stream_seq": 7, "consumer_seq": 9}, "ack_floor": {"stream_seq": 5, "consumer_seq": 6},
    }
    return dx.ConsumerState.from_info(stream, info)


# -- stack file ------------------------------------------------------------------------
def test_stack_values_project_keys_only_secure_skipped() -> None:
    doc = {"config": {
        "aa-event-bus:phase": "2",
        "aa-event-bus:natsUrl": "nats://a:4222",
        "aa-event-bus:natsPassword": {"secure": "v1:abc"},
        "aa-event-bus:streams": {"legacy": {"name": "OLD"}},
        "other-project:phase": "3",
        "aws:region": "eu-west-1",
    }}
    values = dx.stack_values(doc)
    assert values == {"phase": "2", "natsUrl": "nats://a:4222", "streams": {"legacy": {"name": "OLD"}}}
    stack = parse_stack_config(values)
    assert stack.phase == 2
    assert stack.stream_name("legacy") == "OLD"


@pytest.mark.parametrize("doc", [["not", "a", "mapping"], {"config": ["x"]}])
def test_stack_values_not_a_mapping_raises_config_error(doc: object) -> None:
    with pytest.raises(ConfigError) as err:
        dx.stack_values(doc, "Pulumi.x.yaml")
    assert err.value.key.startswith("Pulumi.x.yaml")


def test_stack_values_empty_file_gives_no_values() -> None:
    assert dx.stack_values(None) == {}


# -- helpers ---------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")])
def test_human_bytes_sizes_use_binary_units(n: int, text: str) -> None:
    assert dx.human_bytes(n) == text


def test_render_table_numbers_right_aligned() -> None:
    table = dx.render_table(["NAME", "N"], [["a", "1"], ["bbb", "100"]], right=(1,))
    assert table.splitlines() == ["NAME    N", "a       1", "bbb   100"]


# -- stream info -----------------------------------------------------------------------
def test_stream_states_missing_and_retired_streams_shown_as_such() -> None:
    infos = {"ATHLETE_ALLY_EVENTS": _info("ATHLETE_ALLY_EVENTS", [], 4, retired=True),
             "AA_DLQ": _info("AA_DLQ", ["dlq.>"])}
    states = dx.stream_states(STACK, infos)
    assert [(s.name, s.role, s.exists) for s in states] == [
        ("ATHLETE_ALLY_EVENTS", "legacy", True), ("AA_CORE_HOT", "core", False),
        ("AA_VENDOR_HOT", "vendor", False), ("AA_DLQ", "dlq", True),
    ]
    assert states[0].subjects == ()
    text = dx.format_streams(states, "nats://x")
    assert "(none)" in text and text.count("(missing)") == 2
    assert "missing: AA_CORE_HOT, AA_VENDOR_HOT" in text
    data = dx.streams_json(states, "nats://x")
    assert data["streams"][0]["max_age"] == "24h" and data["streams"][1]["exists"] is False


# -- consumer diagnostic ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("thresholds", "healthy", "failing"),
    [
        (dx.Thresholds(), True, []),
        (dx.Thresholds(max_pending=3), True, []),
        (dx.Thresholds(max_pending=2), False, ["pending"]),
        (dx.Thresholds(max_ack_pending=0), False, ["ack pending"]),
        (dx.Thresholds(max_redelivered=1, max_pending=10), True, []),
        (dx.Thresholds(max_pending=0, max_ack_pending=0, max_redelivered=0), False, ["pending", "ack pending", "redelivered"]),
    ],
)
def test_consumer_report_thresholds_decide_health(thresholds: dx.Thresholds, healthy: bool, failing: list[str]) -> None:
    report = dx.consumer_report(_consumer("AA_CORE_HOT", "d", "athlete-ally.hrv.>", 3, 1, 1), thresholds)
    assert report.healthy is healthy
    assert [c.name for c in report.checks if not c.ok] == failing


@pytest.mark.parametrize(
    ("pending", "ack_pending", "status"),
    [(0, 0, "caught up"), (0, 2, "caught up (2 awaiting ack)"), (1200, 3, "backlog: 1,200 pending, 3 awaiting ack")],
)
def test_consumer_report_status_caught_up_or_backlog(pending: int, ack_pending: int, status: str) -> None:
    report = dx.consumer_report(_consumer("S", "d", "a.>", pending, ack_pending), dx.Thresholds())
    assert report.status == status


def test_format_consumer_exceeded_threshold_named() -> None:
    report = dx.consumer_report(_consumer("S", "d", "a.>", 12), dx.Thresholds(max_pending=10))
    text = dx.format_consumer(report, "nats://x")
    assert "UNHEALTHY: pending 12 > 10 (threshold exceeded)" in text
    assert "stream 7, consumer 9" in text and "stream 5, consumer 6" in text
    data = dx.consumer_json(report, "nats://x")
    assert data["healthy"] is False and data["checks"][0]["limit"] == 10 and data["consumer"]["ack_wait"] == "1m"


@pytest.mark.parametrize(
    ("exists", "found_on", "expected"),
    [
        (True, [], "consumer d not found on stream S"),
        (False, [], "stream S not found, so consumer d is not there either"),
        (True, ["LEGACY"], "consumer d not found on stream S; d exists on LEGACY (try: eventbus consumer diagnostic LEGACY d)"),
    ],
)
def test_missing_consumer_message_says_where_instead(exists: bool, found_on: list[str], expected: str) -> None:
    assert dx.missing_consumer_message("S", "d", exists, found_on) == expected


# -- migration verify ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("statuses", "strict", "ok"),
    [(["pass", "pass"], False, True), (["pass", "warn"], False, True), (["pass", "warn"], True, False),
     (["pass", "fail"], False, False), ([], False, True)],
)
def test_verify_ok_fails_on_fail_and_on_warn_only_when_strict(statuses: list, strict: bool, ok: bool) -> None:
    findings = [Finding(s, "T", "m") for s in statuses]
    assert dx.verify_ok(findings, strict) is ok
    text = dx.format_verify(2, findings, "nats://x", strict)
    assert f"Phase 2 verification {'PASSED' if ok else 'FAILED'}" in text
    assert dx.verify_json(2, findings, "nats://x", strict)["passed"] is ok


# -- plan ------------------------------------------------------------------------------
def _phase0_live(messages: int = 9) -> list[dx.StreamState]:
    infos = {"ATHLETE_ALLY_EVENTS": _info("ATHLETE_ALLY_EVENTS", ["athlete-ally.>", "sleep.*", "vendor.>"], messages),
             "AA_DLQ": _info("AA_DLQ", ["dlq.>"])}
    return dx.stream_states(STACK, infos)


def test_plan_report_phase0_to_1_moves_vendor_with_messages_and_oura() -> None:
    live = _phase0_live()
    consumers = [_consumer("ATHLETE_ALLY_EVENTS", "normalize-oura", "vendor.oura.>", 5),
                 _consumer("ATHLETE_ALLY_EVENTS", "normalize-hrv-durable", "athlete-ally.hrv.>", 3)]
    report = dx.plan_report(STACK, 1, live, consumers, {("ATHLETE_ALLY_EVENTS", "vendor.>"): 5})
    assert [(o.subject, o.now, o.then, o.messages) for o in report.moving] == [
        ("vendor.>", "ATHLETE_ALLY_EVENTS", "AA_VENDOR_HOT", 5)]
    assert [(c.durable, c.stream, c.pending, c.then) for c in report.consumers] == [
        ("normalize-oura", "ATHLETE_ALLY_EVENTS", 5, "AA_VENDOR_HOT")]
    assert [(s.name, s.action) for s in report.streams] == [("AA_VENDOR_HOT", "create")]
    assert any("normalize-oura on ATHLETE_ALLY_EVENTS is kept until it drains" in n for n in report.notes)
    text = dx.format_plan(report, "nats://x", stack_phase=0)
    assert "(the stack is at phase 0)" in text
    assert "1 subject(s) move; 5 message(s)" in text


def test_plan_report_same_phase_nothing_moves() -> None:
    report = dx.plan_report(STACK, 0, _phase0_live(), [], {})
    assert report.moving == () and report.streams == () and report.consumers == ()
    assert "Nothing moves" in dx.format_plan(report, "nats://x")


def test_plan_report_phase3_with_messages_keeps_legacy_stream() -> None:
    report = dx.plan_report(STACK, 3, _phase0_live(messages=4), [], {})
    assert ("ATHLETE_ALLY_EVENTS", "keep", 4) in [(s.name, s.action, s.messages) for s in report.streams]
    assert "kept, owning no subjects, until drained" in dx.format_plan(report, "nats://x")


def test_plan_report_durable_not_yet_created_listed_with_its_new_home() -> None:
    report = dx.plan_report(STACK, 2, _phase0_live(), [], {})
    hrv = [c for c in report.consumers if c.durable == "normalize-hrv-durable"]
    assert [(c.subject, c.stream, c.pending, c.then) for c in hrv] == [("athlete-ally.>", None, None, "AA_CORE_HOT")]
    data = dx.plan_json(report, "nats://x")
    assert {s["subject"] for s in data["subjects"] if s["moves"]} == {"athlete-ally.>", "sleep.*", "vendor.>"}
