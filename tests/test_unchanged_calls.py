"""An unchanged preview's check and diff: decided from the props alone, without loading pydantic.

check() returns inputs equal to the old ones as they are (the kind's own checks still run),
and diff() reports no change when the spec's fields equal the state's, so the provider process
of an unchanged `pulumi preview` parses no spec. Anything else still goes through the parse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from components.jetstream.client import JetStream
from components.pulumi.consumer import ConsumerProvider
from components.pulumi.inputs import ADOPTION, CONSUMER_INPUTS, STREAM_INPUTS
from components.pulumi.stream import StreamProvider
from components.spec.consumer import ConsumerSpec
from components.spec.stream import StreamSpec
from tests.harness import ROOT, NatsServer

STREAM = StreamSpec(name="ORDERS", subjects=["orders.>"], max_age="48h", compression="s2")
DURABLE = ConsumerSpec(stream="ORDERS", durable_name="worker", filter_subjects=["orders.a.>"], ack_wait="60s")


def registered_stream(url: str, spec: StreamSpec = STREAM) -> dict[str, Any]:
    """What the Stream resource registers (nested, secrets left plain as the engine sends them)."""
    return STREAM_INPUTS.nested(spec.props(), {"servers": [url], "credentials": {}, "takeover": []}, lambda v: v)


def registered_durable(url: str, spec: ConsumerSpec = DURABLE, subjects: tuple[str, ...] = ("orders.>",)) -> dict:
    return CONSUMER_INPUTS.nested(spec.props(), {"servers": [url], "credentials": {}, "stream_subjects": list(subjects)},
                                  lambda v: v)


# What a fresh provider process runs: the providers' modules, then check and diff of the given calls.
_CALLS = """
import json, sys
from components.pulumi.consumer import ConsumerProvider
from components.pulumi.stream import StreamProvider
out = []
for kind, id_, olds, news, outs in json.load(sys.stdin):
    p = StreamProvider() if kind == "stream" else ConsumerProvider()
    checked = p.check(olds, news)
    diff = p.diff(id_, outs, checked.inputs)
    out.append([checked.inputs, [f.property for f in checked.failures], diff.changes])
print(json.dumps([out, sorted(m for m in sys.modules if m.split(".")[0] == "pydantic")]))
"""


def in_fresh_process(calls: list[list[Any]], code: str = _CALLS) -> tuple[list[Any], list[str]]:
    """Run `code` (default: check and diff of `calls`) in a fresh interpreter with `calls` as JSON on
    its standard input: its results and the modules it reports as loaded."""
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(calls), capture_output=True, text=True,
                          timeout=60, check=True, cwd=ROOT)
    results, loaded = json.loads(done.stdout)
    return results, loaded


def test_an_unchanged_check_and_diff_load_no_pydantic_and_report_no_change(js: JetStream, nats_server: NatsServer) -> None:
    streams, durables = StreamProvider(), ConsumerProvider()
    s_checked = streams.check({}, registered_stream(nats_server.url)).inputs
    s_created = streams.create(s_checked)
    d_checked = durables.check({}, registered_durable(nats_server.url)).inputs
    d_created = durables.create(d_checked)

    results, pydantic = in_fresh_process([
        ["stream", s_created.id, s_checked, registered_stream(nats_server.url), s_created.outs],
        ["consumer", d_created.id, d_checked, registered_durable(nats_server.url), d_created.outs],
    ])

    assert results == [[s_checked, [], False], [d_checked, [], False]]
    assert pydantic == []


def test_a_changed_spec_field_is_parsed_and_reported_as_a_change(js: JetStream, nats_server: NatsServer) -> None:
    streams = StreamProvider()
    checked = streams.check({}, registered_stream(nats_server.url)).inputs
    created = streams.create(checked)
    # Back to a default: the new props leave max_age out, so only the parse can tell it changed.
    shorter = StreamSpec(name="ORDERS", subjects=["orders.>"], compression="s2")

    results, pydantic = in_fresh_process([
        ["stream", created.id, checked, registered_stream(nats_server.url, shorter), created.outs],
    ])

    [[inputs, failures, changes]] = results
    assert "max_age" not in inputs and failures == [] and changes is True
    assert pydantic  # parsed


def test_an_unchanged_check_still_runs_the_kinds_own_checks() -> None:
    # A state read back by a refresh can hold a filter its stream's desired subjects no longer cover.
    news = registered_durable("nats://127.0.0.1:4222", subjects=("other.>",))
    olds = ConsumerProvider().check({}, news).inputs  # the full check: the same failure

    result = ConsumerProvider().check(olds, news)

    assert [f.property for f in result.failures] == ["filter_subjects"]
    assert "no subject of stream ORDERS (other.>)" in result.failures[0].reason


def test_an_unchanged_check_drops_the_adoption_note_of_the_create() -> None:
    news = registered_stream("nats://127.0.0.1:4222")
    olds = {**StreamProvider().check({"prior": True}, news).inputs, ADOPTION.key: "adopts existing stream ORDERS as is"}

    result = StreamProvider().check(olds, news)

    assert ADOPTION.key not in result.inputs
    assert result.inputs == {k: v for k, v in olds.items() if k != ADOPTION.key}


@pytest.mark.parametrize(("spec", "inputs"), [(StreamSpec, STREAM_INPUTS), (ConsumerSpec, CONSUMER_INPUTS)])
def test_no_spec_field_shares_a_key_with_the_resources_own_props(spec: type, inputs: Any) -> None:
    # diff() compares every key but these as the spec's; a spec field among them would go unseen.
    assert not set(spec.model_fields) & inputs.own_keys
