"""Pure logic, as tables: the phase topology, the live-state plan, config parsing, durations, subjects."""

from __future__ import annotations

import pytest

from components.jetstream.errors import ConfigError
from components.migration.topology import LiveConsumer, LiveStream, bindings, phase_topology, plan
from components.spec.durations import format_duration, parse_duration
from components.spec.stack import parse_stack_config
from components.spec.subjects import covers, kept_in_release, subject_problem, subjects_overlap

LEGACY, CORE, VENDOR, DLQ = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT", "AA_DLQ"
HRV, OURA = "normalize-hrv-durable", "normalize-oura"


def stack(phase: int, **extra: object):
    return parse_stack_config({"phase": phase, "natsUrl": "nats://127.0.0.1:4222", **extra})


PHASES = [
    (0, {LEGACY: ["athlete-ally.>", "sleep.*", "vendor.>"], DLQ: ["dlq.>"]}, {HRV: LEGACY, OURA: LEGACY}),
    (1, {LEGACY: ["athlete-ally.>", "sleep.*"], VENDOR: ["vendor.>"], DLQ: ["dlq.>"]}, {HRV: LEGACY, OURA: VENDOR}),
    (2, {LEGACY: [], CORE: ["athlete-ally.>", "sleep.*"], VENDOR: ["vendor.>"], DLQ: ["dlq.>"]}, {HRV: CORE, OURA: VENDOR}),
    (3, {CORE: ["athlete-ally.>", "sleep.*"], VENDOR: ["vendor.>"], DLQ: ["dlq.>"]}, {HRV: CORE, OURA: VENDOR}),
]


@pytest.mark.parametrize(("phase", "streams", "homes"), PHASES, ids=[f"phase{p[0]}" for p in PHASES])
def test_phase_topology_assigns_subjects_and_durables_as_the_seeds_plan(phase: int, streams: dict, homes: dict) -> None:
    topology = phase_topology(stack(phase))

    assert {s.name: list(s.subjects) for s in topology.streams} == streams
    assert {c.durable_name: c.stream for c in topology.consumers} == homes
    for spec in topology.streams:
        assert spec.replicas == 1 and spec.compression == "s2"
    assert {c.durable_name: (c.max_deliver, c.ack_wait, c.ack_policy) for c in topology.consumers} == {
        HRV: (5, "1m", "explicit"), OURA: (5, "1m", "explicit")}


def test_phase_topology_every_subject_has_exactly_one_owner_in_every_phase() -> None:
    for phase in range(4):
        topology = phase_topology(stack(phase))
        subjects = [(s.name, x) for s in topology.streams for x in s.subjects]
        for i, (a, x) in enumerate(subjects):
            for b, y in subjects[i + 1:]:
                assert not subjects_overlap(x, y), f"phase {phase}: {a}:{x} overlaps {b}:{y}"


def test_phase_topology_honours_stream_name_and_replica_overrides() -> None:
    topology = phase_topology(stack(1, replicas=3, streams={"vendor": {"name": "VENDOR_X"}}))

    assert {s.name for s in topology.streams} == {LEGACY, "VENDOR_X", DLQ}
    assert all(s.replicas == 3 for s in topology.streams)
    assert next(s for s in topology.streams if s.name == "VENDOR_X").max_age == "48h"


def test_bindings_give_the_home_stream_and_stable_candidates() -> None:
    assert bindings(stack(0))[HRV] == {"stream": LEGACY, "candidates": [CORE, LEGACY]}
    assert bindings(stack(2))[HRV] == {"stream": CORE, "candidates": [CORE, LEGACY]}
    assert bindings(stack(1))[OURA] == {"stream": VENDOR, "candidates": [VENDOR, LEGACY]}


def test_plan_without_live_state_is_the_topology() -> None:
    topology = phase_topology(stack(1))
    decided = plan(topology, stack(1), None)

    assert decided.streams == topology.streams
    assert decided.consumers == topology.consumers
    assert decided.warnings == ()


def test_plan_keeps_a_leaving_stream_with_unprocessed_messages_owning_nothing() -> None:
    live = {LEGACY: LiveStream(LEGACY, ("athlete-ally.>", "sleep.*"), 10, 10, {HRV: LiveConsumer(pending=4)})}

    decided = plan(phase_topology(stack(3)), stack(3, allowDataLoss=[LEGACY]), live)

    kept = next(s for s in decided.streams if s.name == LEGACY)
    assert kept.subjects == ()
    assert (LEGACY, HRV) in {(c.stream, c.durable_name) for c in decided.consumers}
    assert any(f"{HRV} has 4 unprocessed" in w for w in decided.warnings)


def test_plan_keeps_a_leaving_stream_with_messages_unless_allowed() -> None:
    live = {LEGACY: LiveStream(LEGACY, (), 10, 10, {})}

    kept = plan(phase_topology(stack(3)), stack(3), live)
    allowed = plan(phase_topology(stack(3)), stack(3, allowDataLoss=[LEGACY]), live)

    assert LEGACY in {s.name for s in kept.streams}
    assert any("holds 10 messages" in w and "allowDataLoss" in w for w in kept.warnings)
    assert LEGACY not in {s.name for s in allowed.streams}
    assert allowed.warnings == ()


def test_plan_drops_a_leaving_stream_that_is_empty() -> None:
    live = {VENDOR: LiveStream(VENDOR, ("vendor.>",), 0, 0, {OURA: LiveConsumer()})}

    decided = plan(phase_topology(stack(0)), stack(0), live)

    assert VENDOR not in {s.name for s in decided.streams}


def test_plan_keeps_a_durable_leaving_a_stream_until_it_drains() -> None:
    live = {LEGACY: LiveStream(LEGACY, ("athlete-ally.>", "sleep.*", "vendor.>"), 20, 20,
                               {OURA: LiveConsumer(pending=3, ack_pending=1), HRV: LiveConsumer()})}

    decided = plan(phase_topology(stack(1)), stack(1), live)

    pairs = {(c.stream, c.durable_name) for c in decided.consumers}
    assert {(LEGACY, OURA), (VENDOR, OURA), (LEGACY, HRV)} <= pairs
    assert any("3 pending, 1 awaiting ack" in w for w in decided.warnings)


def test_plan_starts_a_new_durable_after_history_on_a_stream_gaining_its_subjects() -> None:
    live = {
        LEGACY: LiveStream(LEGACY, (), 500, 812, {}),
        CORE: LiveStream(CORE, ("athlete-ally.>", "sleep.*"), 40, 40, {HRV: LiveConsumer()}),
    }

    decided = plan(phase_topology(stack(1)), stack(1), live)

    hrv = next(c for c in decided.consumers if c.id == f"{LEGACY}/{HRV}")
    assert (hrv.deliver_policy, hrv.opt_start_seq) == ("by_start_sequence", 813)


def test_plan_starts_a_new_durable_from_the_beginning_where_its_subjects_already_live() -> None:
    # The seeds' legacy stream with a backlog but no durable yet: never skip what nobody consumed.
    live = {LEGACY: LiveStream(LEGACY, ("athlete-ally.>", "sleep.*", "vendor.>"), 30, 30, {})}

    decided = plan(phase_topology(stack(0)), stack(0), live)

    assert all(c.deliver_policy == "all" for c in decided.consumers)


def test_plan_orders_the_stream_losing_subjects_after_the_one_claiming_them() -> None:
    forward = {LEGACY: LiveStream(LEGACY, ("athlete-ally.>", "sleep.*", "vendor.>"), 0, 0, {})}
    backward = {LEGACY: LiveStream(LEGACY, ("athlete-ally.>", "sleep.*"), 0, 0, {}),
                VENDOR: LiveStream(VENDOR, ("vendor.>",), 5, 5, {})}

    assert plan(phase_topology(stack(1)), stack(1), forward).after == {LEGACY: (VENDOR,)}
    back = plan(phase_topology(stack(0)), stack(0), backward)
    assert back.after == {VENDOR: (LEGACY,)}
    assert [s.name for s in back.ordered_streams()].index(LEGACY) < [s.name for s in back.ordered_streams()].index(VENDOR)



def test_plan_keeps_on_a_narrowing_stream_what_its_release_would_leave_without_one() -> None:
    from tests.test_topology_data import example

    orders = stack(1, topology=example("orders"))
    live = {"ORDERS": LiveStream("ORDERS", ("orders.>",), 9, 9, {}), "ORDERS_DLQ": LiveStream("ORDERS_DLQ", ("dlq.orders.>",))}

    decided = plan(phase_topology(orders), orders, live)

    # ORDERS_EU claims orders.eu.>, so ORDERS releases orders.> whole: it keeps orders.us.> in that call.
    assert decided.keeps == {"ORDERS_EU": {"ORDERS": ("orders.us.>",)}}
    assert decided.after == {"ORDERS": ("ORDERS_EU",)}
    # The seeds' moves release exactly what moves: nothing to keep.
    assert plan(phase_topology(stack(1)), stack(1), {LEGACY: LiveStream(LEGACY, ("athlete-ally.>", "sleep.*", "vendor.>"))}).keeps == {}
    assert plan(phase_topology(orders), orders, None).keeps == {}


KEPT = [
    # released, kept, claimed, candidates, kept in the release
    (["orders.>"], [], ["orders.eu.>"], ["orders.us.>", "orders.eu.>"], ("orders.us.>",)),
    # a third stream's subject under the released one stays too, until that stream claims it
    (["orders.>"], ["refunds.>"], ["orders.eu.>"], ["orders.us.>", "orders.other.>", "refunds.>"],
     ("orders.us.>", "orders.other.>")),
    # not under a released subject: another stream may own it
    (["orders.eu.>"], [], ["orders.eu.>"], ["orders.us.>"], ()),
    # overlapping the claim, or what the stream keeps anyway
    (["orders.>"], ["orders.x"], ["orders.*"], ["orders.eu.>", "orders.x.>", "orders.*"], ("orders.eu.>", "orders.x.>")),
    (["orders.>"], [], ["orders.eu.>"], ["orders.*.new"], ()),
]


@pytest.mark.parametrize(("released", "kept", "claimed", "candidates", "expected"), KEPT)
def test_kept_in_release_keeps_only_subjects_no_other_stream_can_own(
        released: list[str], kept: list[str], claimed: list[str], candidates: list[str], expected: tuple) -> None:
    assert kept_in_release(released, kept, claimed, candidates) == expected


CONFIG_ERRORS = [
    ({"phase": 4}, "aa-event-bus:phase", "less than or equal to 3"),
    ({"phase": -1}, "aa-event-bus:phase", "greater than or equal to 0"),
    ({"replicas": 7}, "aa-event-bus:replicas", "less than or equal to 5"),
    ({"storage": "disk"}, "aa-event-bus:storage", "'file' or 'memory'"),
    ({"streams": {"core": {"maxAge": "2 days"}}}, "aa-event-bus:streams.core.maxAge", "invalid duration"),
    ({"streams": {"dlq": {"name": "AA_CORE_HOT"}}}, "aa-event-bus:streams:", "own name"),
    ({"consumers": {"hrv": {"filterSubject": "athlete-ally..hrv"}}}, "aa-event-bus:consumers.hrv.filterSubject", "empty token"),
    ({"duplicateWindow": "30m", "streams": {"dlq": {"maxAge": "10m"}}}, "aa-event-bus:duplicateWindow:", "streams.dlq.maxAge 10m"),
    ({"nope": 1}, "aa-event-bus:nope", "unknown stack config key"),
]


@pytest.mark.parametrize(("extra", "key", "hint"), CONFIG_ERRORS, ids=[e[1].rstrip(":").split(":")[-1] for e in CONFIG_ERRORS])
def test_parse_stack_config_bad_value_names_the_key_and_what_is_allowed(extra: dict, key: str, hint: str) -> None:
    raw = {"phase": 0, "natsUrl": "nats://127.0.0.1:4222", **extra}

    with pytest.raises(ConfigError) as bad:
        parse_stack_config(raw)

    assert key in str(bad.value)
    assert hint in str(bad.value)


@pytest.mark.parametrize(("text", "ns"), [("48h", 172800 * 10**9), ("2m", 120 * 10**9), ("14d", 14 * 86400 * 10**9),
                                           ("1h30m", 5400 * 10**9), ("500ms", 5 * 10**8), ("0", 0), (10**9, 10**9)])
def test_parse_duration_reads_human_units_as_nanoseconds(text: str | int, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(("ns", "text"), [(172800 * 10**9, "48h"), (14 * 86400 * 10**9, "14d"), (5400 * 10**9, "1h30m"),
                                           (5 * 10**8, "500ms"), (0, "0"), (90 * 10**9, "1m30s")])
def test_format_duration_prints_the_canonical_human_form(ns: int, text: str) -> None:
    assert format_duration(ns) == text
    assert parse_duration(text) == ns


@pytest.mark.parametrize("bad", ["48 hours", "h", "5x", "-", "1h-5m"])
def test_parse_duration_rejects_malformed_text_with_an_example(bad: str) -> None:
    with pytest.raises(ValueError, match="e.g. '48h'"):
        parse_duration(bad)


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("vendor.>", "vendor.oura.x", True), ("vendor.>", "vendor", False), ("sleep.*", "sleep.score", True),
    ("sleep.*", "sleep.a.b", False), ("*.x", "a.>", True), ("a.b", "a.c", False), (">", "anything.at.all", True),
])
def test_subjects_overlap_follows_nats_wildcard_rules(a: str, b: str, overlap: bool) -> None:
    assert subjects_overlap(a, b) is overlap
    assert subjects_overlap(b, a) is overlap


def test_covers_and_subject_problem_catch_the_usual_mistakes() -> None:
    assert covers("athlete-ally.>", "athlete-ally.hrv.>")
    assert not covers("athlete-ally.hrv.>", "athlete-ally.>")
    assert subject_problem("a.>.b") and subject_problem("a b") and subject_problem("a..b") and subject_problem("")
    assert subject_problem("athlete-ally.hrv.raw-received") is None
