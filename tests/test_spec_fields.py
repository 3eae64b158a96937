"""Every spec field against a real nats-server: does the server change it in place, as declared?

One row per field (and per kind of change where the server treats them differently):
the object is created with the row's initial value, the new value is applied IN PLACE
through the project's client (`stream_update`, `consumer_upsert(..., "update")`), and
the server's answer must match both the row and `replace_reasons()`. "replace" means
the server refused the change (ImmutableFieldChange) or took it without applying it.
A second test creates each row's value and reads it back: spec -> wire -> server ->
from_wire must give the same spec, or every preview would show a phantom change.

Adding a field is its declaration in the spec plus a row here; the last tests fail
while a spec field has no row.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.jetstream.client import JetStream
from components.jetstream.errors import ImmutableFieldChange
from components.pulumi.consumer import ConsumerProvider
from components.spec.consumer import ConsumerSpec
from components.spec.consumer import replace_reasons as consumer_replace_reasons
from components.spec.fields import required_api_levels
from components.spec.stream import StreamSpec
from components.spec.stream import replace_reasons as stream_replace_reasons

STREAM = StreamSpec(name="FIELDS", subjects=["fields.>"])
ORIGIN = StreamSpec(name="ORIGIN", subjects=["origin.>"])
TTL = {"allow_msg_ttl": True, "allow_rollup_hdrs": True}

#: (field, initial value(s), new value(s) applied on top, what the server does in place)
STREAM_ROWS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("subjects", {}, {"subjects": ["fields.>", "more.*"]}, "update"),
    ("description", {}, {"description": "all the fields"}, "update"),
    ("retention", {}, {"retention": "interest"}, "update"),
    ("retention", {}, {"retention": "workqueue"}, "replace"),
    ("retention", {"retention": "workqueue"}, {"retention": "limits"}, "replace"),
    ("storage", {}, {"storage": "memory"}, "replace"),
    ("discard", {}, {"discard": "new"}, "update"),
    ("discard_new_per_subject", {"discard": "new", "max_msgs_per_subject": 5}, {"discard_new_per_subject": True}, "update"),
    ("max_msgs", {}, {"max_msgs": 1000}, "update"),
    ("max_bytes", {}, {"max_bytes": 1 << 20}, "update"),
    ("max_age", {}, {"max_age": "72h"}, "update"),
    ("max_msg_size", {}, {"max_msg_size": 4096}, "update"),
    ("max_msgs_per_subject", {}, {"max_msgs_per_subject": 10}, "update"),
    ("max_consumers", {}, {"max_consumers": 10}, "update"),
    ("duplicate_window", {}, {"duplicate_window": "5m"}, "update"),
    ("compression", {}, {"compression": "s2"}, "update"),
    ("metadata", {}, {"metadata": {"team": "platform"}}, "update"),
    ("allow_direct", {}, {"allow_direct": True}, "update"),
    ("allow_rollup_hdrs", {}, {"allow_rollup_hdrs": True}, "update"),
    ("deny_delete", {}, {"deny_delete": True}, "update"),
    ("deny_delete", {"deny_delete": True}, {"deny_delete": False}, "replace"),
    ("deny_purge", {}, {"deny_purge": True}, "update"),
    ("deny_purge", {"deny_purge": True}, {"deny_purge": False}, "replace"),
    ("sealed", {}, {"sealed": True}, "update"),
    ("sealed", {"sealed": True}, {"sealed": False, "deny_delete": True, "deny_purge": True, "discard": "new"}, "replace"),
    ("first_seq", {}, {"first_seq": 100}, "replace"),
    ("sources", {}, {"sources": [{"name": "ORIGIN", "filter_subject": "origin.a.>"}]}, "update"),
    ("mirror", {"subjects": []}, {"subjects": [], "mirror": {"name": "ORIGIN"}}, "replace"),
    ("subject_transform", {}, {"subject_transform": {"source": "fields.>", "destination": "moved.>"}}, "update"),
    ("subject_transform", {"subject_transform": {"source": "fields.>", "destination": "moved.>"}},
     {"subject_transform": None}, "update"),
    ("republish", {}, {"republish": {"destination": "republished.>", "headers_only": True}}, "update"),
    ("allow_msg_ttl", {}, {"allow_msg_ttl": True}, "update"),
    ("allow_msg_ttl", {"allow_msg_ttl": True}, {"allow_msg_ttl": False}, "replace"),
    ("subject_delete_marker_ttl", TTL, {"subject_delete_marker_ttl": "5s"}, "update"),
    ("subject_delete_marker_ttl", {**TTL, "subject_delete_marker_ttl": "5s"}, {"subject_delete_marker_ttl": "0"}, "update"),
    ("allow_msg_counter", {}, {"allow_msg_counter": True}, "replace"),
    ("allow_msg_counter", {"allow_msg_counter": True}, {"allow_msg_counter": False}, "replace"),
    ("allow_atomic", {}, {"allow_atomic": True}, "update"),
    ("allow_atomic", {"allow_atomic": True}, {"allow_atomic": False}, "update"),
    pytest.param("replicas", {}, {"replicas": 3}, "update", marks=pytest.mark.cluster),
    pytest.param("placement", {}, {"placement": {"cluster": "tc"}}, "update", marks=pytest.mark.cluster),
]  # type: ignore[list-item]

#: Identity fields: another value is another object, so there is no "in place" to test.
IDENTITY = {"name": "stream", "stream": "consumer", "durable_name": "consumer"}

PULL = ConsumerSpec(stream="FIELDS", durable_name="worker", filter_subjects=["fields.a.>"])
PUSH = {"deliver_subject": "deliver.worker", "max_waiting": None}
GROUPS = {"priority_groups": ["jobs"], "priority_policy": "overflow"}

CONSUMER_ROWS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("description", {}, {"description": "normalizer"}, "update"),
    ("deliver_policy", {}, {"deliver_policy": "new"}, "replace"),
    ("opt_start_seq", {"deliver_policy": "by_start_sequence", "opt_start_seq": 1}, {"opt_start_seq": 5}, "replace"),
    ("opt_start_time", {"deliver_policy": "by_start_time", "opt_start_time": "2020-01-01T00:00:00Z"},
     {"opt_start_time": "2021-01-01T00:00:00Z"}, "replace"),
    ("ack_policy", {}, {"ack_policy": "all"}, "replace"),
    ("ack_wait", {}, {"ack_wait": "90s"}, "update"),
    ("max_deliver", {}, {"max_deliver": 10}, "update"),
    ("backoff", {}, {"backoff": ["30s", "2m"], "max_deliver": 5}, "update"),
    ("backoff", {"backoff": ["30s", "2m", "1m"], "max_deliver": 5}, {"backoff": ["30s", "1m", "2m"]}, "update"),
    ("filter_subjects", {}, {"filter_subjects": ["fields.a.>", "fields.b.>"]}, "update"),
    ("replay_policy", {}, {"replay_policy": "original"}, "replace"),
    ("max_ack_pending", {}, {"max_ack_pending": 50}, "update"),
    ("max_waiting", {}, {"max_waiting": 100}, "replace"),
    ("inactive_threshold", {}, {"inactive_threshold": "1h"}, "update"),
    ("replicas", {}, {"replicas": 1}, "update"),
    ("mem_storage", {}, {"mem_storage": True}, "replace"),
    ("headers_only", {}, {"headers_only": True}, "update"),
    ("metadata", {}, {"metadata": {"owner": "normalize-service"}}, "update"),
    ("sample_freq", {}, {"sample_freq": "10%"}, "update"),
    ("pause_until", {}, {"pause_until": "2100-01-01T00:00:00Z"}, "update"),
    ("pause_until", {"pause_until": "2100-01-01T00:00:00Z"}, {"pause_until": "2101-01-01T00:00:00Z"}, "update"),
    ("pause_until", {"pause_until": "2100-01-01T00:00:00Z"}, {"pause_until": None}, "update"),
    ("max_batch", {}, {"max_batch": 100}, "update"),
    ("max_expires", {}, {"max_expires": "30s"}, "update"),
    ("max_bytes", {}, {"max_bytes": 1 << 20}, "update"),
    ("priority_groups", {}, GROUPS, "update"),
    ("priority_groups", GROUPS, {"priority_groups": ["jobs", "batch"]}, "update"),
    ("priority_policy", GROUPS, {"priority_policy": "pinned_client"}, "update"),
    ("priority_policy", GROUPS, {"priority_policy": "prioritized"}, "update"),
    ("priority_timeout", {**GROUPS, "priority_policy": "pinned_client"}, {"priority_timeout": "1m"}, "update"),
    ("deliver_subject", PUSH, {"deliver_subject": "deliver.other"}, "update"),
    ("deliver_subject", {}, PUSH, "replace"),
    ("deliver_subject", PUSH, {"deliver_subject": None, "max_waiting": 512}, "replace"),
    ("deliver_group", PUSH, {"deliver_group": "workers"}, "update"),
    ("flow_control", {**PUSH, "idle_heartbeat": "5s"}, {"flow_control": True}, "replace"),
    ("idle_heartbeat", PUSH, {"idle_heartbeat": "5s"}, "replace"),
    ("rate_limit_bps", PUSH, {"rate_limit_bps": 1000}, "update"),
]


def _row_id(row: Any) -> str:
    values = row.values if hasattr(row, "values") else row
    return f"{values[0]}:{values[3]}:{'+'.join(f'{k}={v}' for k, v in values[2].items())}"[:80]


def row_stream(values: dict[str, Any]) -> StreamSpec:
    return StreamSpec.model_validate({**STREAM.model_dump(), **values})


def row_consumer(values: dict[str, Any]) -> ConsumerSpec:
    return ConsumerSpec.model_validate({**PULL.model_dump(), **values})


def create_row_stream(js: JetStream, spec: StreamSpec) -> None:
    """Create `spec` the only way the server allows: a sealed stream is sealed by an update."""
    js.stream_create(spec.model_copy(update={"sealed": False}).wire() if spec.sealed else spec.wire())
    if spec.sealed:
        js.stream_update(spec.wire())


def _stream_as_served(js: JetStream, name: str) -> StreamSpec:
    """The stream as the server serves it: its config, but a first_seq its state does not start at
    reads as none (the server echoes an in-place first_seq in the config and ignores it)."""
    info = js.stream_info(name)
    spec = StreamSpec.from_wire(info["config"])
    if spec.first_seq and info["state"]["first_seq"] != spec.first_seq:
        return spec.model_copy(update={"first_seq": 0})
    return spec


def _in_place(apply: Any, read: Any, new: Any) -> str:
    """What the server did with `new`: "update" (applied as asked) or "replace" (refused, or taken
    but not applied: the object would then claim a value it does not have)."""
    try:
        apply()
    except ImmutableFieldChange:
        return "replace"
    return "update" if read() == new else "replace"


def _client(request: pytest.FixtureRequest) -> JetStream:
    clustered = request.node.get_closest_marker("cluster") is not None
    js: JetStream = request.getfixturevalue("cluster_js" if clustered else "js")
    js.stream_create(ORIGIN.wire())
    return js


@pytest.mark.parametrize(("field", "initial", "new", "expected"), STREAM_ROWS, ids=[_row_id(r) for r in STREAM_ROWS])
def test_update_stream_field_in_place_server_and_replace_reasons_agree(
    request: pytest.FixtureRequest, field: str, initial: dict, new: dict, expected: str) -> None:
    js = _client(request)
    old_spec, new_spec = row_stream(initial), row_stream({**initial, **new})
    create_row_stream(js, old_spec)
    reasons = stream_replace_reasons(old_spec, new_spec)

    server = _in_place(lambda: js.stream_update(new_spec.wire()),
                       lambda: _stream_as_served(js, new_spec.name), new_spec)

    assert server == expected
    assert ("replace" if reasons else "update") == expected, reasons
    assert expected == "update" or field in reasons


@pytest.mark.parametrize(("field", "initial", "new", "expected"), STREAM_ROWS, ids=[_row_id(r) for r in STREAM_ROWS])
def test_create_stream_with_field_value_reads_back_the_same_spec(
    request: pytest.FixtureRequest, field: str, initial: dict, new: dict, expected: str) -> None:
    js = _client(request)
    spec = row_stream({**initial, **new})

    create_row_stream(js, spec)

    assert StreamSpec.from_wire(js.stream_info(spec.name)["config"]) == spec
    assert _stream_as_served(js, spec.name) == spec


@pytest.fixture
def fields_stream(js: JetStream) -> JetStream:
    js.stream_create(STREAM.wire())
    return js


@pytest.mark.parametrize(("field", "initial", "new", "expected"), CONSUMER_ROWS, ids=[_row_id(r) for r in CONSUMER_ROWS])
def test_update_consumer_field_in_place_server_and_replace_reasons_agree(
    fields_stream: JetStream, field: str, initial: dict, new: dict, expected: str) -> None:
    js = fields_stream
    old_spec, new_spec = row_consumer(initial), row_consumer({**initial, **new})
    js.consumer_upsert(old_spec.stream, old_spec.wire(), "create")
    reasons = consumer_replace_reasons(old_spec, new_spec)

    # Through the provider's update (pause_until changes through $JS.API.CONSUMER.PAUSE, not the update).
    server = _in_place(lambda: ConsumerProvider().apply(js, new_spec, js.consumer_info(new_spec.stream, "worker"), {}),
                       lambda: ConsumerSpec.from_wire(new_spec.stream, js.consumer_info(new_spec.stream, "worker")["config"]),
                       new_spec)

    assert server == expected
    assert ("replace" if reasons else "update") == expected, reasons
    assert expected == "update" or field in reasons


@pytest.mark.parametrize(("field", "initial", "new", "expected"), CONSUMER_ROWS, ids=[_row_id(r) for r in CONSUMER_ROWS])
def test_create_consumer_with_field_value_reads_back_the_same_spec(
    fields_stream: JetStream, field: str, initial: dict, new: dict, expected: str) -> None:
    spec = row_consumer({**initial, **new})

    info = fields_stream.consumer_upsert(spec.stream, spec.wire(), "create")

    assert ConsumerSpec.from_wire(spec.stream, info["config"]) == spec
    assert ConsumerSpec.from_wire(spec.stream, fields_stream.consumer_info(spec.stream, "worker")["config"]) == spec


def _fields_with_rows(rows: list) -> set[str]:
    return {(row.values if hasattr(row, "values") else row)[0] for row in rows}


@pytest.mark.parametrize(("spec_cls", "rows"), [(StreamSpec, STREAM_ROWS), (ConsumerSpec, CONSUMER_ROWS)],
                         ids=["stream", "consumer"])
def test_check_spec_fields_without_a_row_fails_naming_them(spec_cls: type, rows: list) -> None:
    missing = set(spec_cls.model_fields) - _fields_with_rows(rows) - set(IDENTITY)

    assert missing == set(), f"add a row for each of {sorted(missing)} to tests/test_spec_fields.py"


def test_required_api_levels_of_new_features_name_each_field() -> None:
    spec = row_stream({**TTL, "subject_delete_marker_ttl": "5s", "allow_atomic": True})

    assert required_api_levels(spec) == {"allow_msg_ttl": 1, "subject_delete_marker_ttl": 1, "allow_atomic": 2}
    assert required_api_levels(STREAM) == {}
