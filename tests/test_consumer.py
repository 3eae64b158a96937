"""The consumer provider against a real nats-server: diff rules, adoption, guards, drift."""

from __future__ import annotations

from typing import Any

import pytest

from components.jetstream.client import JetStream
from components.jetstream.errors import DataLossRefused, EventBusError, PedanticRejection
from components.pulumi.consumer import ConsumerProvider
from components.pulumi.inputs import CONSUMER_INPUTS
from components.spec.consumer import ConsumerSpec
from components.spec.stream import StreamSpec
from tests.harness import NatsServer
from tests.test_spec_fields import CONSUMER_ROWS, row_consumer
from tests.test_spec_fields import STREAM as FIELDS_STREAM

P = ConsumerProvider()
PULL = ConsumerSpec(stream="EVENTS", durable_name="worker", filter_subjects=["events.a.>"], ack_wait="60s", max_deliver=5)


@pytest.fixture
def stream(js: JetStream) -> StreamSpec:
    spec = StreamSpec(name="EVENTS", subjects=["events.>"])
    js.stream_create(spec.wire())
    return spec


def props(spec: ConsumerSpec, url: str, **extra: Any) -> dict[str, Any]:
    return {**spec.props(), "servers": [url], "credentials": {}, "allow_data_loss": False,
            "stream_subjects": ["events.>"], "drain_timeout": 0, **extra}


def changed(spec: ConsumerSpec, **update: Any) -> ConsumerSpec:
    return ConsumerSpec.model_validate({**spec.model_dump(), **update})


def _rows(expected: str) -> list[tuple[str, dict, dict]]:
    """The rows of the field table (tests/test_spec_fields.py) the server treats as `expected`."""
    return [(f, initial, new) for f, initial, new, kind in CONSUMER_ROWS if kind == expected]


UPDATABLE, FIXED = _rows("update"), _rows("replace")


def _ids(rows: list[tuple[str, dict, dict]]) -> list[str]:
    return [f"{f}-{i}" for i, (f, _, _) in enumerate(rows)]


def _row_props(spec: ConsumerSpec, url: str) -> dict[str, Any]:
    return {**props(spec, url), "stream_subjects": list(FIELDS_STREAM.subjects)}


@pytest.mark.parametrize(("field", "initial", "update"), UPDATABLE, ids=_ids(UPDATABLE))
def test_diff_updatable_field_change_is_update_and_server_applies_it_in_place(
    js: JetStream, nats_server: NatsServer, field: str, initial: dict, update: dict) -> None:
    js.stream_create(FIELDS_STREAM.wire())
    base = row_consumer(initial)
    created = P.create(_row_props(base, nats_server.url))
    new = changed(base, **update)

    diff = P.diff(created.id, created.outs, _row_props(new, nats_server.url))

    assert diff.changes is True
    assert diff.replaces == []
    after = P.update(created.id, created.outs, _row_props(new, nats_server.url))
    assert ConsumerSpec.from_wire(base.stream, js.consumer_info(base.stream, base.durable_name)["config"]) == new
    assert P.diff(created.id, after.outs, _row_props(new, nats_server.url)).changes is False


@pytest.mark.parametrize(("field", "initial", "update"), FIXED, ids=_ids(FIXED))
def test_diff_fixed_field_change_is_replace_before_anything_is_deleted(
    js: JetStream, nats_server: NatsServer, field: str, initial: dict, update: dict) -> None:
    # Whether the server refuses it in place is tests/test_spec_fields.py's row; here: the plan.
    js.stream_create(FIELDS_STREAM.wire())
    base = row_consumer(initial)
    created = P.create(_row_props(base, nats_server.url))
    new = changed(base, **update)

    diff = P.diff(created.id, created.outs, _row_props(new, nats_server.url))

    assert field in diff.replaces
    assert diff.delete_before_replace is True


def test_create_adopts_consumer_made_by_raw_api_like_the_seeds_without_change(
    js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    # nats.js consumerOpts(): durable, explicit ack, maxDeliver 5, ackWait 60s.
    js.request("$JS.API.CONSUMER.CREATE.EVENTS.worker", {"stream_name": "EVENTS", "config": {
        "durable_name": "worker", "ack_policy": "explicit", "max_deliver": 5, "ack_wait": 60 * 10**9,
        "filter_subject": "events.a.>", "deliver_policy": "all"}})

    checked = P.check({}, props(PULL, nats_server.url))
    created = P.create(checked.inputs)

    assert checked.inputs["adoption"] == "adopts existing consumer EVENTS/worker as is"
    assert P.diff(created.id, created.outs, props(PULL, nats_server.url)).changes is False


def test_create_existing_consumer_with_other_ack_policy_is_flagged_in_preview_and_fails_at_create(
    js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    js.consumer_upsert("EVENTS", changed(PULL, ack_policy="all").wire(), "create")

    checked = P.check({}, props(PULL, nats_server.url))

    assert checked.failures == []
    assert "already exists with a different ack_policy" in checked.inputs["adoption"]
    with pytest.raises(EventBusError, match="ack_policy"):
        P.create(props(PULL, nats_server.url))


BAD_INPUT = [
    ("durable_name", {"durable_name": "normalize hrv"}),
    ("filter_subjects", {"filter_subjects": ["events..a"]}),
    ("filter_subjects", {"filter_subjects": ["events.a.>", "events.a.b"]}),
    ("filter_subjects", {"filter_subjects": ["other.>"]}),
    ("ack_wait", {"ack_wait": "0"}),
    ("max_deliver", {"max_deliver": 0}),
    ("backoff", {"backoff": ["1s"], "ack_wait": "60s"}),
    ("max_waiting", {"deliver_subject": "deliver.x", "max_waiting": 10}),
    ("opt_start_seq", {"deliver_policy": "by_start_sequence"}),
    ("priority_groups", {"priority_policy": "overflow"}),
    ("priority_policy", {"priority_groups": ["jobs"]}),
    ("priority_policy", {"priority_policy": "overflow", "priority_groups": ["jobs"], "deliver_subject": "deliver.x",
                         "max_waiting": None}),
    ("pause_until", {"pause_until": "next tuesday"}),
    ("pause_until", {"pause_until": "2100-01-01T00:00:00"}),
    ("sample_freq", {"sample_freq": "half"}),
    ("max_expires", {"max_expires": "500us"}),
]


@pytest.mark.parametrize(("field", "bad"), BAD_INPUT, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUT)])
def test_check_bad_input_fails_naming_the_field_and_leaves_server_untouched(
    js: JetStream, nats_server: NatsServer, stream: StreamSpec, field: str, bad: dict) -> None:
    result = P.check({}, {**props(PULL, nats_server.url), **bad})

    assert result.failures
    text = " ".join(f"{f.property} {f.reason}" for f in result.failures)
    assert field in text
    assert js.consumer_infos("EVENTS") == []


def test_delete_consumer_with_pending_messages_is_refused_without_opt_in(
    js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    created = P.create(props(PULL, nats_server.url))
    js.publish("events.a.1", b"work")

    with pytest.raises(DataLossRefused, match=r"worker on stream EVENTS.*1 messages pending"):
        P.delete(created.id, created.outs)
    assert js.consumer_info("EVENTS", "worker") is not None

    P.delete(created.id, {**created.outs, "allow_data_loss": True})
    assert js.consumer_info("EVENTS", "worker") is None


def test_delete_consumer_without_pending_messages_succeeds(js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    created = P.create(props(PULL, nats_server.url))
    js.publish("events.other", b"not for this consumer")

    P.delete(created.id, created.outs)

    assert js.consumer_info("EVENTS", "worker") is None


def test_read_after_out_of_band_edit_reports_the_server_config(js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    created = P.create(props(PULL, nats_server.url))
    js.consumer_upsert("EVENTS", changed(PULL, max_deliver=9).wire(), "update")

    read = P.read(created.id, created.outs)

    assert read.outs["max_deliver"] == 9
    assert P.diff(created.id, read.outs, props(PULL, nats_server.url)).changes is True


def test_read_after_out_of_band_delete_drops_the_resource(js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    created = P.create(props(PULL, nats_server.url))
    js.consumer_delete("EVENTS", "worker")

    assert P.read(created.id, created.outs).id == ""


def test_create_on_missing_stream_fails_with_err_code_10059(js: JetStream, nats_server: NatsServer) -> None:
    from components.jetstream.errors import StreamNotFound

    with pytest.raises(StreamNotFound) as refused:
        P.create(props(PULL, nats_server.url))
    assert refused.value.err_code == 10059
    assert refused.value.stream == "EVENTS"


def test_pedantic_request_rejects_what_the_server_would_rewrite(js: JetStream, stream: StreamSpec) -> None:
    # Without pedantic mode the server would silently replace ack_wait with the first backoff step.
    config = {**PULL.wire(), "backoff": [10**9, 5 * 10**9]}

    with pytest.raises(PedanticRejection) as refused:
        js.consumer_upsert("EVENTS", config, "create")
    assert refused.value.err_code == 10157


def test_create_stores_non_default_fields_and_the_inputs_diff_and_delete_read(
    js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    created = P.create(props(PULL, nats_server.url, drain_timeout=7))

    assert set(ConsumerSpec.model_fields) & set(created.outs) == set(PULL.props())
    assert created.outs["drain_timeout"] == 7.0  # delete waits this long, from the state alone
    assert created.outs["consumer_id"] == "EVENTS/worker"
    assert P.diff(created.id, created.outs, props(PULL, nats_server.url, drain_timeout=7)).changes is False
    assert P.diff(created.id, created.outs, props(PULL, nats_server.url, drain_timeout=8)).changes is True


def test_read_reports_the_inputs_the_program_sends(js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    # What the Consumer resource registers: the spec's non-default fields and the inputs not at their default.
    values = {"stream_subjects": ["events.>"], "servers": [nats_server.url], "credentials": {},
              "allow_data_loss": False, "drain_timeout": 0.0}
    sent = {k: v for k, v in CONSUMER_INPUTS.register(values, lambda v: v).items() if v is not None}
    created = P.create({**PULL.props(), **sent})

    assert P.read(created.id, created.outs).inputs == {**PULL.props(), **sent}
    assert set(sent) == {"stream_subjects", "servers", "drain_timeout"}


def test_update_of_a_consumer_deleted_with_its_stream_fails_naming_the_stream(
    js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    created = P.create(props(PULL, nats_server.url))
    js.stream_delete("EVENTS")

    with pytest.raises(EventBusError, match="stream EVENTS does not exist"):
        P.update(created.id, created.outs, props(changed(PULL, max_deliver=9), nats_server.url))


def test_pause_and_resume_update_the_durable_in_place_keeping_its_backlog(
        js: JetStream, nats_server: NatsServer, stream: StreamSpec) -> None:
    created = P.create(props(PULL, nats_server.url))
    for i in range(3):
        js.publish(f"events.a.{i}", b"work")
    born = js.consumer_info("EVENTS", "worker")["created"]
    paused_spec = changed(PULL, pause_until="2100-01-01T00:00:00Z")

    diff = P.diff(created.id, created.outs, props(paused_spec, nats_server.url))
    assert (diff.changes, diff.replaces) == (True, [])
    paused = P.update(created.id, created.outs, props(paused_spec, nats_server.url))

    info = js.consumer_info("EVENTS", "worker")
    assert info["paused"] is True and info["config"]["pause_until"] == "2100-01-01T00:00:00Z"
    assert (info["created"], info["num_pending"]) == (born, 3), "the durable was recreated or lost its backlog"
    assert P.diff(created.id, paused.outs, props(paused_spec, nats_server.url)).changes is False

    P.update(created.id, paused.outs, props(PULL, nats_server.url))
    info = js.consumer_info("EVENTS", "worker")
    assert not info.get("paused") and "pause_until" not in info["config"]
    assert (info["created"], info["num_pending"]) == (born, 3)
