"""The stream provider against a real nats-server: diff rules, adoption, guards, drift, hand-over."""

from __future__ import annotations

from typing import Any

import pytest

from components.jetstream.client import JetStream
from components.jetstream.errors import DataLossRefused, EventBusError, ImmutableFieldChange, SubjectOverlap
from components.migration.handover import hand_over
from components.migration.verify import stored_subjects
from components.pulumi.inputs import STREAM_INPUTS
from components.pulumi.stream import StreamProvider
from components.spec.stream import StreamSpec
from tests.harness import NatsServer
from tests.test_spec_fields import ORIGIN, STREAM_ROWS, create_row_stream, row_stream

P = StreamProvider()
BASE = StreamSpec(name="ORDERS", subjects=["orders.>"], max_age="48h", compression="s2")


def props(spec: StreamSpec, url: str, **extra: Any) -> dict[str, Any]:
    return {**spec.props(), "servers": [url], "credentials": {}, "allow_data_loss": False, "takeover": [], **extra}


def changed(spec: StreamSpec, **update: Any) -> StreamSpec:
    return StreamSpec.model_validate({**spec.model_dump(), **update})


def _rows(expected: str) -> list[tuple[str, dict, dict]]:
    """The single-server rows of the field table (tests/test_spec_fields.py) the server treats as `expected`."""
    rows = [row for row in STREAM_ROWS if not hasattr(row, "marks")]
    return [(f, initial, new) for f, initial, new, kind in rows if kind == expected]  # type: ignore[misc]


UPDATABLE, FIXED = _rows("update"), _rows("replace")


def _ids(rows: list[tuple[str, dict, dict]]) -> list[str]:
    return [f"{f}-{i}" for i, (f, _, _) in enumerate(rows)]


@pytest.mark.parametrize(("field", "initial", "update"), UPDATABLE, ids=_ids(UPDATABLE))
def test_diff_updatable_field_change_is_update_and_server_applies_it_in_place(
    js: JetStream, nats_server: NatsServer, field: str, initial: dict, update: dict) -> None:
    js.stream_create(ORIGIN.wire())
    base = row_stream(initial)
    created = P.create(props(base, nats_server.url))
    new = changed(base, **update)

    diff = P.diff(created.id, created.outs, props(new, nats_server.url))

    assert diff.changes is True
    assert diff.replaces == []
    after = P.update(created.id, created.outs, props(new, nats_server.url))
    assert StreamSpec.from_wire(js.stream_info(base.name)["config"]) == new
    assert P.diff(created.id, after.outs, props(new, nats_server.url)).changes is False


@pytest.mark.parametrize(("field", "initial", "update"), FIXED, ids=_ids(FIXED))
def test_diff_fixed_field_change_is_replace_before_anything_is_deleted(
    js: JetStream, nats_server: NatsServer, field: str, initial: dict, update: dict) -> None:
    # Whether the server refuses it in place is tests/test_spec_fields.py's row; here: the plan.
    js.stream_create(ORIGIN.wire())
    base = row_stream(initial)
    create_row_stream(js, base)
    outs = P.read(base.name, props(base, nats_server.url)).outs
    new = changed(base, **update)

    diff = P.diff(base.name, outs, props(new, nats_server.url))

    assert diff.changes is True
    assert field in diff.replaces
    assert diff.delete_before_replace is True


def test_diff_sealed_turned_off_is_replace_and_server_refuses_to_unseal(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))
    sealed = P.update(created.id, created.outs, props(changed(BASE, sealed=True), nats_server.url))

    diff = P.diff(created.id, sealed.outs, props(BASE, nats_server.url))

    assert diff.replaces == ["deny_delete", "deny_purge", "sealed"]  # sealing also set the deny flags
    with pytest.raises(ImmutableFieldChange) as refused:
        js.stream_update(BASE.wire())
    assert refused.value.err_code == 10052


def test_diff_first_seq_change_is_replace_because_server_ignores_it_in_place(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))
    new = changed(BASE, first_seq=100)

    assert P.diff(created.id, created.outs, props(new, nats_server.url)).replaces == ["first_seq"]
    for _ in range(3):
        js.publish("orders.new", b"x")
    # The server takes the update but the stream still starts where it did: in place it is a lie.
    js.stream_update(new.wire())
    assert js.stream_info("ORDERS")["state"]["first_seq"] == 1


def test_create_then_diff_same_inputs_shows_no_changes(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))
    assert created.outs["subjects"] == ["orders.>"]
    assert created.outs["max_age"] == "48h"
    assert P.diff(created.id, created.outs, props(BASE, nats_server.url)).changes is False


def test_create_adopts_stream_made_by_raw_api_like_the_seeds_without_change(js: JetStream, nats_server: NatsServer) -> None:
    # What the seeds' ensureStream would send, with the compression the server really takes.
    seeds_config = {
        "name": "ATHLETE_ALLY_EVENTS", "subjects": ["athlete-ally.>", "vendor.>", "sleep.*"],
        "max_age": 24 * 3600 * 10**9, "storage": "file", "discard": "old",
        "duplicate_window": 120 * 10**9, "compression": "s2", "num_replicas": 1,
    }
    js.request("$JS.API.STREAM.CREATE.ATHLETE_ALLY_EVENTS", seeds_config)
    js.publish("vendor.oura.sleep", b"kept")
    desired = StreamSpec(name="ATHLETE_ALLY_EVENTS", subjects=["athlete-ally.>", "vendor.>", "sleep.*"],
                         max_age="24h", compression="s2")

    checked = P.check({}, props(desired, nats_server.url))
    created = P.create(checked.inputs)

    assert checked.failures == []
    assert checked.inputs["adoption"] == "adopts existing stream ATHLETE_ALLY_EVENTS as is"
    assert js.stream_info("ATHLETE_ALLY_EVENTS")["state"]["messages"] == 1
    assert P.diff(created.id, created.outs, props(desired, nats_server.url)).changes is False


def test_create_adopts_existing_stream_and_updates_its_updatable_fields(js: JetStream, nats_server: NatsServer) -> None:
    js.stream_create(changed(BASE, max_age="1h").wire())

    checked = P.check({}, props(BASE, nats_server.url))
    P.create(checked.inputs)

    assert checked.inputs["adoption"] == "adopts existing stream ORDERS, updating max_age"
    assert js.stream_info("ORDERS")["config"]["max_age"] == 48 * 3600 * 10**9


def test_create_existing_stream_with_other_storage_is_flagged_in_preview_and_fails_at_create(
    js: JetStream, nats_server: NatsServer) -> None:
    js.stream_create(changed(BASE, storage="memory").wire())

    checked = P.check({}, props(BASE, nats_server.url))

    # check() cannot fail here: Pulumi checks a replacement with no old inputs as well.
    assert checked.failures == []
    assert "already exists with a different storage" in checked.inputs["adoption"]
    with pytest.raises(EventBusError, match="storage"):
        P.create(props(BASE, nats_server.url))
    assert js.stream_info("ORDERS")["config"]["storage"] == "memory"


BAD_INPUT = [
    ("name", {"name": "orders stream"}),
    ("name", {"name": "orders.v2"}),
    ("subjects", {"subjects": ["orders..new"]}),
    ("subjects", {"subjects": [""]}),
    ("subjects", {"subjects": ["orders.>.new"]}),
    ("subjects", {"subjects": ["orders. new"]}),
    ("subjects", {"subjects": ["orders.*x"]}),
    ("subjects", {"subjects": ["orders.>", "orders.new"]}),
    ("max_age", {"max_age": "-5m"}),
    ("max_age", {"max_age": "48 hours"}),
    ("duplicate_window", {"max_age": "1m", "duplicate_window": "5m"}),
    ("replicas", {"replicas": 0}),
    ("replicas", {"replicas": 6}),
    ("max_msgs", {"max_msgs": 0}),
    ("compression", {"compression": "gzip"}),
    ("retention", {"retention": "forever"}),
    ("discard_new_per_subject", {"discard_new_per_subject": True}),
    ("subject_delete_marker_ttl", {"subject_delete_marker_ttl": "5s"}),
    ("subject_delete_marker_ttl", {"subject_delete_marker_ttl": "500ms", "allow_msg_ttl": True, "allow_rollup_hdrs": True}),
    ("allow_msg_counter", {"allow_msg_counter": True, "allow_msg_ttl": True}),
    ("allow_rollup_hdrs", {"allow_rollup_hdrs": True, "deny_purge": True}),
    ("republish.destination", {"republish": {"source": "orders.>"}}),
]


@pytest.mark.parametrize(("field", "bad"), BAD_INPUT, ids=[f"{b[0]}={list(b[1].values())[-1]}" for b in BAD_INPUT])
def test_check_bad_input_fails_naming_the_field_and_leaves_server_untouched(
    js: JetStream, nats_server: NatsServer, field: str, bad: dict) -> None:
    news = {**props(BASE, nats_server.url), **bad}

    result = P.check({}, news)

    assert result.failures, "bad input must fail check"
    assert field in {f.property for f in result.failures} or any(field in f.reason for f in result.failures)
    assert all(f.reason for f in result.failures)
    assert js.stream_names() == []


def test_delete_stream_with_messages_is_refused_without_opt_in(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))
    js.publish("orders.new", b"x")

    with pytest.raises(DataLossRefused, match=r"ORDERS.*1 stored messages.*allowDataLoss"):
        P.delete(created.id, created.outs)
    assert js.stream_info("ORDERS") is not None

    P.delete(created.id, {**created.outs, "allow_data_loss": True})
    assert js.stream_info("ORDERS") is None


def test_diff_replace_of_stream_with_messages_is_refused_at_preview(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))
    js.publish("orders.new", b"x")

    with pytest.raises(DataLossRefused, match=r"ORDERS: replacing it because storage cannot change in place would destroy its 1"):
        P.diff(created.id, created.outs, props(changed(BASE, storage="memory"), nats_server.url))

    allowed = P.diff(created.id, created.outs, props(changed(BASE, storage="memory"), nats_server.url, allow_data_loss=True))
    assert allowed.replaces == ["storage"]


def test_read_after_out_of_band_edit_reports_the_server_config(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))
    js.stream_update(changed(BASE, max_age="1h").wire())

    read = P.read(created.id, created.outs)

    assert read.outs["max_age"] == "1h"
    assert read.inputs["max_age"] == "1h"
    assert "stream_name" not in read.inputs
    assert P.diff(created.id, read.outs, props(BASE, nats_server.url)).changes is True


def test_read_after_out_of_band_delete_drops_the_resource(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))
    js.stream_delete("ORDERS")

    assert P.read(created.id, created.outs).id == ""


def test_update_to_no_subjects_leaves_the_stream_owning_none(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url))

    P.update(created.id, created.outs, props(changed(BASE, subjects=()), nats_server.url))

    config = js.stream_info("ORDERS")["config"]
    assert stored_subjects(config) == []
    assert "ORDERS" not in (config.get("subjects") or [])
    assert js.stream_names("ORDERS") == []


def test_hand_over_moves_subjects_from_a_takeover_stream(js: JetStream, nats_server: NatsServer) -> None:
    js.stream_create(StreamSpec(name="LEGACY", subjects=["orders.>", "refunds.>"]).wire())

    P.create(props(BASE, nats_server.url, takeover=["LEGACY"]))

    assert stored_subjects(js.stream_info("LEGACY")["config"]) == ["refunds.>"]
    assert stored_subjects(js.stream_info("ORDERS")["config"]) == ["orders.>"]


def test_hand_over_from_an_unmanaged_stream_is_refused_naming_it(js: JetStream) -> None:
    js.stream_create(StreamSpec(name="OTHER", subjects=["orders.eu.>"]).wire())

    with pytest.raises(SubjectOverlap) as refused:
        hand_over(js, "ORDERS", ("orders.>",), takeover=["LEGACY"])

    assert refused.value.err_code == 10065
    assert "OTHER" in str(refused.value)
    assert stored_subjects(js.stream_info("OTHER")["config"]) == ["orders.eu.>"]


@pytest.mark.cluster
def test_create_with_replicas_3_on_the_cluster_keeps_three_copies(cluster_js: JetStream, nats_cluster: Any) -> None:
    spec = changed(BASE, replicas=3)

    created = P.create(props(spec, nats_cluster.url))

    info = cluster_js.stream_info("ORDERS")
    assert info["config"]["num_replicas"] == 3
    assert len(info["cluster"].get("replicas") or []) == 2  # the leader plus two replicas
    assert P.diff(created.id, created.outs, props(spec, nats_cluster.url)).changes is False


def test_create_with_replicas_3_on_a_single_server_fails_with_err_code_10074(js: JetStream, nats_server: NatsServer) -> None:
    from components.jetstream.errors import ReplicasUnsupported

    with pytest.raises(ReplicasUnsupported) as refused:
        P.create(props(changed(BASE, replicas=3), nats_server.url))
    assert refused.value.err_code == 10074
    assert "replicas 1 on a single server" in str(refused.value)


def test_delete_honours_the_current_stacks_opt_in_over_the_old_state(js: JetStream, nats_server: NatsServer) -> None:
    from pulumi.dynamic import ConfigureRequest
    from pulumi.dynamic.config import Config

    from components.pulumi.base import ALLOW_DATA_LOSS_KEY

    created = P.create(props(BASE, nats_server.url))
    js.publish("orders.new", b"x")
    provider = StreamProvider()
    provider.configure(ConfigureRequest(Config({ALLOW_DATA_LOSS_KEY: '["ORDERS"]'}, "aa-event-bus")))

    provider.delete(created.id, created.outs)  # the old state still says allow_data_loss: false

    assert js.stream_info("ORDERS") is None


def test_create_stores_non_default_fields_and_only_the_inputs_later_calls_read(js: JetStream, nats_server: NatsServer) -> None:
    created = P.create(props(BASE, nats_server.url, claim_retry_timeout=5.0, reclaim=["orders.>"]))

    spec_keys = set(StreamSpec.model_fields) & set(created.outs)
    assert spec_keys == set(BASE.props())  # defaults are filled back in by the model on both sides of a diff
    # Used by the write itself only: not stored (the state is rewritten on every step of an up).
    assert "claim_retry_timeout" not in created.outs
    assert "reclaim" not in created.outs
    assert created.outs["stream_name"] == "ORDERS"
    assert P.diff(created.id, created.outs, props(BASE, nats_server.url, claim_retry_timeout=5.0)).changes is False


def test_diff_state_written_with_full_outputs_shows_no_changes(js: JetStream, nats_server: NatsServer) -> None:
    # A stack applied by the previous version stored every spec field and the claim retry timeout.
    created = P.create(props(BASE, nats_server.url))
    old_outs = {**created.outs, **BASE.props(full=True), "claim_retry_timeout": 30.0}

    assert P.diff(created.id, old_outs, props(BASE, nats_server.url)).changes is False


def test_read_reports_the_inputs_the_program_sends(js: JetStream, nats_server: NatsServer) -> None:
    # What the Stream resource registers: the spec's non-default fields and the inputs not at their default.
    values = {"servers": [nats_server.url], "credentials": {}, "allow_data_loss": False, "takeover": ["OTHER"],
              "claim_retry_timeout": 30.0, "reclaim": []}
    sent = {k: v for k, v in STREAM_INPUTS.register(values, lambda v: v).items() if v is not None}
    created = P.create({**BASE.props(), **sent})

    read = P.read(created.id, created.outs)

    assert read.inputs == {**BASE.props(), **sent}
    assert set(sent) == {"servers", "takeover"}


def test_update_waits_while_the_lifeline_holds_the_stream_write_lock(js: JetStream, nats_server: NatsServer) -> None:
    import threading

    from components.pulumi import base

    created = P.create(props(BASE, nats_server.url))
    done = threading.Event()

    def update() -> None:
        P.update(created.id, created.outs, props(changed(BASE, max_age="72h"), nats_server.url))
        done.set()

    worker = threading.Thread(target=update)
    with base.STREAM_WRITE_LOCK:  # what the lifeline takes before the provider process exits
        worker.start()
        done.wait(1.0)
        assert not done.is_set()
        assert js.stream_info("ORDERS")["config"]["max_age"] == 48 * 3600 * 10**9
    worker.join(30)
    assert done.is_set()
    assert js.stream_info("ORDERS")["config"]["max_age"] == 72 * 3600 * 10**9


LIMITS = [
    # update on a stream holding 5 messages of 100 bytes under orders.0 .. orders.4 (two on orders.0)
    ("max_msgs-old", {"max_msgs": 2}, "max_msgs 2 discards 3 of its 5 messages"),
    ("max_bytes-old", {"max_bytes": 300}, "max_bytes 300 discards its oldest messages"),
    ("max_msgs_per_subject", {"max_msgs_per_subject": 1}, "max_msgs_per_subject 1 discards"),
    ("max_msgs_per_subject-discard-new", {"max_msgs_per_subject": 1, "discard": "new"}, "max_msgs_per_subject 1"),
    ("max_age", {"max_age": "1s", "duplicate_window": "1s"}, "max_age 1s expires its messages older than that"),
    ("max_msgs-new", {"max_msgs": 2, "discard": "new"}, None),
    ("max_bytes-new", {"max_bytes": 300, "discard": "new"}, None),
    ("max_msgs-above", {"max_msgs": 10}, None),
    ("max_msgs_per_subject-above", {"max_msgs_per_subject": 2}, None),
    ("max_age-longer", {"max_age": "72h"}, None),
]


@pytest.mark.parametrize(("update", "refusal"), [(u, r) for _, u, r in LIMITS], ids=[i for i, _, _ in LIMITS])
def test_diff_lowered_limit_is_refused_exactly_when_the_server_discards_messages(
        js: JetStream, nats_server: NatsServer, update: dict, refusal: str | None) -> None:
    import time

    start = changed(BASE, discard=update.get("discard", "old"))
    created = P.create(props(start, nats_server.url))
    for i in (0, 0, 1, 2, 3):
        js.publish(f"orders.{i}", b"x" * 100)
    if "max_age" in update:
        time.sleep(1.2)  # the messages are now older than a 1s max_age
    new = changed(start, **update)

    if refusal is None:
        assert P.diff(created.id, created.outs, props(new, nats_server.url)).changes is True
    else:
        with pytest.raises(DataLossRefused, match=refusal) as refused:
            P.diff(created.id, created.outs, props(new, nats_server.url))
        assert "Add 'ORDERS' to the stack's allowDataLoss list" in str(refused.value)
        # Named in the opt-in, the same change goes ahead.
        assert P.diff(created.id, created.outs, props(new, nats_server.url, allow_data_loss=True)).changes is True
    # The policy agrees with the server: applied in place, the change discards messages exactly when refused.
    js.stream_update(new.wire())
    deadline = time.monotonic() + 10
    while refusal and js.stream_info("ORDERS")["state"]["messages"] == 5 and time.monotonic() < deadline:
        time.sleep(0.2)  # max_age expiry runs on the server's timer
    assert (js.stream_info("ORDERS")["state"]["messages"] < 5) is (refusal is not None)
