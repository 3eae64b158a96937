"""The non-spec inputs declared once per resource: what each resource registers, stores and compares."""

from __future__ import annotations

import pytest

from components.cli.preview_report import IGNORED_INPUTS
from components.pulumi.inputs import CONSUMER_INPUTS, GATE_INPUTS, STREAM_INPUTS, flatten


def _secret(value: object) -> tuple[str, object]:
    return ("secret", value)


def test_register_wraps_non_empty_secrets_and_adds_the_output_placeholders() -> None:
    props = STREAM_INPUTS.register({"servers": ["nats://127.0.0.1:4222"], "credentials": {"token": "t"}}, _secret)

    assert props == {"servers": ["nats://127.0.0.1:4222"], "credentials": ("secret", {"token": "t"}), "stream_name": None}


def test_register_leaves_out_the_inputs_at_their_default_and_every_call_reads_them_back() -> None:
    values = {"servers": ["nats://a"], "credentials": {}, "allow_data_loss": False, "takeover": [],
              "claim_retry_timeout": 30.0, "reclaim": [], "keeps": {}}
    props = STREAM_INPUTS.register(values, _secret)

    assert props == {"servers": ["nats://a"], "stream_name": None}
    assert {k: STREAM_INPUTS.value(props, k) for k in values} == values
    assert STREAM_INPUTS.register({**values, "allow_data_loss": True, "takeover": ["B"]}, _secret) == {
        "servers": ["nats://a"], "allow_data_loss": True, "takeover": ["B"], "stream_name": None}
    # A state written with every input stored diffs clean against props that leave the defaults out,
    # and the preview report reads both the same.
    assert STREAM_INPUTS.changed(values, props) == []
    assert STREAM_INPUTS.with_defaults(props) == {**values, "stream_name": None}


def test_register_keeps_a_value_it_cannot_compare_yet() -> None:
    class NotKnownYet:
        def __iter__(self):
            raise TypeError("an Output cannot be iterated")

    later = NotKnownYet()
    assert STREAM_INPUTS.register({"takeover": later}, _secret)["takeover"] is later


def test_nested_puts_the_spec_and_the_plain_inputs_under_two_properties_and_secrets_on_top() -> None:
    spec = {"name": "S", "subjects": ["s.>"]}
    values = {"servers": ["nats://a"], "credentials": {"token": "t"}, "allow_data_loss": False, "takeover": ["B"]}
    props = STREAM_INPUTS.nested(spec, values, _secret)

    # The engine keeps a checked input secret by its top-level key: credentials stay there.
    assert props == {"spec": spec, "inputs": {"servers": ["nats://a"], "takeover": ["B"]},
                     "credentials": ("secret", {"token": "t"}), "stream_name": None}
    assert flatten(props) == {**spec, "servers": ["nats://a"], "takeover": ["B"],
                              "credentials": ("secret", {"token": "t"}), "stream_name": None}
    # Every input at its default: no inputs property at all.
    assert CONSUMER_INPUTS.nested({"stream": "S"}, {"servers": []}, _secret) == {"spec": {"stream": "S"},
                                                                               "consumer_id": None}


def test_nested_keeps_the_keys_ignore_changes_names_on_top_where_the_engine_matches_them() -> None:
    spec = {"stream": "S", "deliver_policy": "by_start_sequence", "opt_start_seq": 7, "ack_wait": "60s"}
    props = CONSUMER_INPUTS.nested(spec, {"servers": ["nats://a"], "drain_timeout": 5.0}, _secret,
                                   keep_on_top=["deliver_policy", "opt_start_seq", "drain_timeout"])

    assert props == {"spec": {"stream": "S", "ack_wait": "60s"}, "inputs": {"servers": ["nats://a"]},
                     "deliver_policy": "by_start_sequence", "opt_start_seq": 7, "drain_timeout": 5.0,
                     "consumer_id": None}
    assert flatten(props) == {**spec, "servers": ["nats://a"], "drain_timeout": 5.0, "consumer_id": None}


def test_flatten_returns_flat_props_as_they_are() -> None:
    flat = {"name": "S", "servers": ["nats://a"], "stream_name": "S"}
    assert flatten(flat) == flat
    assert flatten(flatten(STREAM_INPUTS.nested({"name": "S"}, {"servers": ["nats://a"]}, _secret))) == {
        "name": "S", "servers": ["nats://a"], "stream_name": None}


def test_register_undeclared_input_fails_naming_it() -> None:
    with pytest.raises(KeyError, match="drain_timeout"):
        STREAM_INPUTS.register({"drain_timeout": 5.0}, _secret)


def test_changed_compares_normalised_values_and_skips_unknown_ones() -> None:
    olds = {"servers": ["nats://a"], "credentials": {}, "allow_data_loss": False, "drain_timeout": 30.0}

    assert CONSUMER_INPUTS.changed(olds, {**olds, "drain_timeout": 30}) == []
    assert CONSUMER_INPUTS.changed(olds, {**olds, "allow_data_loss": True}) == ["allow_data_loss"]
    assert CONSUMER_INPUTS.changed(olds, {**olds, "servers": "?"}, unknown=lambda v: v == "?") == []
    # Not a diff key: a change of the stream's desired subjects alone is no change of the durable.
    assert CONSUMER_INPUTS.changed(olds, {**olds, "stream_subjects": ["x.>"]}) == []


def test_stored_falls_back_to_defaults_for_a_state_written_before_an_input_existed() -> None:
    assert STREAM_INPUTS.stored({"servers": ["nats://a"]}) == {
        "servers": ["nats://a"], "credentials": {}, "allow_data_loss": False, "takeover": []}


@pytest.mark.parametrize(("key", "ignored"), [
    ("__provider", True), ("adoption", True), ("claim_retry_timeout", True), ("stream_name", True),
    ("consumer_id", True), ("checks", True), ("probes", True),
    ("takeover", False), ("reclaim", False), ("drain_timeout", False), ("allow_data_loss", False), ("stack", False),
    ("credentials", False),
])
def test_preview_report_ignores_only_what_is_not_config(key: str, ignored: bool) -> None:
    assert (key in IGNORED_INPUTS) is ignored


def test_gate_compares_what_it_verifies_and_not_the_credentials() -> None:
    olds = {"phase": 1, "stack": {"phase": 1}, "verify": True, "hook": "", "servers": ["nats://a"]}

    assert GATE_INPUTS.changed(olds, {**olds, "credentials": {"token": "new"}}) == []
    assert GATE_INPUTS.changed(olds, {**olds, "hook": "make restart"}) == ["hook"]
