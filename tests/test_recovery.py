"""Pure logic of recovery, as tables: ownership checks, start positions, stranded durables,
managed stream metadata, and the preview report's verdict on an unowned subject."""

from __future__ import annotations

import pytest

from components.cli.preview_report import BLOCKED, OK, render
from components.jetstream.errors import SubjectOverlap
from components.migration.topology import LiveConsumer, LiveStream, phase_topology, plan
from components.spec.stack import parse_stack_config
from components.spec.stream import CLAIMED, DRAINED, RELEASED, StreamSpec, carried_metadata, recorded

LEGACY, CORE, VENDOR, DLQ = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT", "AA_DLQ"
HRV, OURA = "normalize-hrv-durable", "normalize-oura"
CORE_SUBJECTS = ("athlete-ally.>", "sleep.*")


def stack(phase: int):
    return parse_stack_config({"phase": phase, "natsUrl": "nats://127.0.0.1:4222"})


def owners_at(phase: int, **override: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each subject owned as `phase` declares, with `override` (subject -> owners) on top."""
    table = {x: (s.name,) for s in phase_topology(stack(phase)).streams for x in s.subjects}
    return {**table, **{k.replace("_", "."): v for k, v in override.items()}}


def test_plan_warns_an_unowned_subject_naming_both_owners_and_claims_it_before_every_other_stream() -> None:
    live = {LEGACY: LiveStream(LEGACY, CORE_SUBJECTS, 10, 10), VENDOR: LiveStream(VENDOR, ()), DLQ: LiveStream(DLQ, ("dlq.>",))}
    owners = {**owners_at(1), "vendor.>": ()}

    decided = plan(phase_topology(stack(1)), stack(1), live, owners)

    assert any(w.startswith(f"subject vendor.> has no stream (actual owner: none, expected owner: {VENDOR})")
               for w in decided.warnings)
    assert decided.unowned == ("vendor.>",)
    assert decided.reclaim == {VENDOR: ("vendor.>",)}
    assert decided.ordered_streams()[0].name == VENDOR
    assert VENDOR in decided.after[LEGACY] and VENDOR in decided.after[DLQ]


def test_plan_on_a_server_where_nothing_was_created_yet_warns_of_no_unowned_subject() -> None:
    seeds = {LEGACY: LiveStream(LEGACY, (*CORE_SUBJECTS, "vendor.>"), 10, 10)}  # AA_DLQ not created yet

    for live, owners in (({}, {}), (seeds, {**owners_at(0), "dlq.>": ()})):
        decided = plan(phase_topology(stack(0)), stack(0), live, {x: owners.get(x, ()) for x in owners_at(0)})
        assert decided.unowned == () and not any(w.startswith("subject ") for w in decided.warnings)


def test_plan_treats_the_move_it_makes_as_no_drift() -> None:
    live = {LEGACY: LiveStream(LEGACY, (*CORE_SUBJECTS, "vendor.>"), 10, 10)}

    decided = plan(phase_topology(stack(1)), stack(1), live, owners_at(0))

    assert not any(w.startswith("subject ") for w in decided.warnings)
    assert decided.reclaim == {}


def test_plan_warns_a_subject_taken_back_outside_a_hand_over_and_reclaims_it() -> None:
    live = {LEGACY: LiveStream(LEGACY, (*CORE_SUBJECTS, "vendor.>"), 10, 10, released={"vendor.>": 4}),
            VENDOR: LiveStream(VENDOR, ())}

    decided = plan(phase_topology(stack(1)), stack(1), live, owners_at(0))

    assert f"subject vendor.> is owned by {LEGACY} (expected owner: {VENDOR})" in decided.warnings[0]
    assert decided.reclaim == {VENDOR: ("vendor.>",)}
    assert decided.unowned == ()


def test_plan_with_a_subject_owned_by_an_unmanaged_stream_fails_naming_that_stream() -> None:
    live = {LEGACY: LiveStream(LEGACY, CORE_SUBJECTS, 10, 10), VENDOR: LiveStream(VENDOR, ())}

    with pytest.raises(SubjectOverlap) as refused:
        plan(phase_topology(stack(1)), stack(1), live, {**owners_at(1), "vendor.>": ("OTHER",)})

    assert "vendor.> is owned by OTHER, which this stack does not manage" in str(refused.value)
    assert refused.value.err_code == 10065


def test_plan_starts_a_durable_after_the_recorded_claim_when_its_stream_already_owns_the_subjects() -> None:
    # Killed after LEGACY claimed vendor.> (1 -> 0), before normalize-oura was created there.
    live = {LEGACY: LiveStream(LEGACY, (*CORE_SUBJECTS, "vendor.>"), 900, 900, {HRV: LiveConsumer()},
                               claimed={"vendor.>": 640})}

    decided = plan(phase_topology(stack(0)), stack(0), live, owners_at(0))

    oura = next(c for c in decided.consumers if c.id == f"{LEGACY}/{OURA}")
    assert (oura.deliver_policy, oura.opt_start_seq) == ("by_start_sequence", 641)


def test_plan_starts_a_durable_from_the_beginning_on_subjects_owned_since_creation() -> None:
    live = {LEGACY: LiveStream(LEGACY, (*CORE_SUBJECTS, "vendor.>"), 30, 30, claimed={"athlete-ally.>": 7})}

    decided = plan(phase_topology(stack(0)), stack(0), live, owners_at(0))

    oura = next(c for c in decided.consumers if c.id == f"{LEGACY}/{OURA}")
    assert oura.deliver_policy == "all"


def test_plan_creates_a_draining_durable_at_the_first_stranded_message_and_says_how_many() -> None:
    live = {LEGACY: LiveStream(LEGACY, CORE_SUBJECTS, 300, 300, {HRV: LiveConsumer()}, stranded={OURA: (120, 30)}),
            VENDOR: LiveStream(VENDOR, ("vendor.>",), 50, 50, {OURA: LiveConsumer()})}

    decided = plan(phase_topology(stack(1)), stack(1), live, owners_at(1))

    drain = next(c for c in decided.consumers if c.id == f"{LEGACY}/{OURA}")
    assert (drain.deliver_policy, drain.opt_start_seq) == ("by_start_sequence", 120)
    assert any(w.startswith(f"30 messages under vendor.oura.> are stored in {LEGACY} from seq 120 on")
               for w in decided.warnings)


def test_carried_metadata_keeps_a_claim_while_owned_and_the_first_release_until_claimed_again() -> None:
    config = {"metadata": {"_nats.ver": "2.15.1", CLAIMED + "vendor.>": "9", DRAINED + OURA: "12"}}

    released = carried_metadata(config, CORE_SUBJECTS, released={"vendor.>": 40})
    again = carried_metadata({"metadata": released}, CORE_SUBJECTS, released={"vendor.>": 75})
    claimed = carried_metadata({"metadata": again}, (*CORE_SUBJECTS, "vendor.>"), claimed={"vendor.>": 80})

    assert released == {RELEASED + "vendor.>": "40", DRAINED + OURA: "12"}
    assert recorded({"metadata": again}, RELEASED) == {"vendor.>": 40}
    assert claimed == {CLAIMED + "vendor.>": "80", DRAINED + OURA: "12"}


def test_spec_drops_managed_metadata_so_it_is_never_drift_but_wire_carries_it() -> None:
    spec = StreamSpec.from_wire({"name": "S", "subjects": ["s.>"], "metadata": {CLAIMED + "s.>": "3", "team": "x"}})

    assert spec.metadata == {"team": "x"}
    assert spec.wire({CLAIMED + "s.>": "3"})["metadata"] == {"team": "x", CLAIMED + "s.>": "3"}


def preview_with(*warnings: str) -> dict:
    return {"steps": [], "changeSummary": {"same": 6},
            "diagnostics": [{"severity": "warning", "message": f"warning: {w}\n"} for w in warnings]}


def test_preview_report_fails_on_an_unowned_or_mis_owned_subject_and_passes_other_warnings() -> None:
    unowned = render(preview_with("subject vendor.> has no stream (actual owner: none, expected owner: AA_VENDOR_HOT)"), "s")
    drifted = render(preview_with("subject vendor.> is owned by ATHLETE_ALLY_EVENTS (expected owner: AA_VENDOR_HOT), "
                                  "changed outside this stack: `pulumi up` moves it back to AA_VENDOR_HOT"), "s")
    kept = render(preview_with("consumer normalize-oura on ATHLETE_ALLY_EVENTS is kept until it drains: 3 pending"), "s")

    assert unowned.exit_code == BLOCKED
    assert "Subjects without a stream" in unowned.markdown
    assert drifted.exit_code == BLOCKED
    assert "owned by the wrong stream" in drifted.markdown
    assert kept.exit_code == OK
