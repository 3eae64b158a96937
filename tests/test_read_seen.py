"""A read that finds the server's config as the state saw it reports the state, without a parse.

create, update and read store beside the outputs the digest of the server's config they were
taken from (`seen`, components.pulumi.base.seen_digest). A later read, the refresh of every
drift check and `preview --refresh`, that finds the same config reports the stored state as
it is: no spec parse, no pydantic in the provider process. A config that differs in any field,
or a state written by other code, is parsed as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.jetstream.client import JetStream
from components.pulumi import base
from components.pulumi.consumer import ConsumerProvider
from components.pulumi.inputs import SEEN_KEY
from components.pulumi.stream import StreamProvider
from tests.harness import ROOT, NatsServer, PulumiProject
from tests.test_unchanged_calls import in_fresh_process, registered_durable, registered_stream

# What a fresh provider process runs: the providers' modules, then read of each given resource.
_READS = """
import json, sys
from components.pulumi.consumer import ConsumerProvider
from components.pulumi.stream import StreamProvider
out = []
for kind, id_, outs in json.load(sys.stdin):
    p = StreamProvider() if kind == "stream" else ConsumerProvider()
    result = p.read(id_, outs)
    out.append([result.id, result.outs, result.inputs])
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "pydantic" or m.startswith("components.spec.stream"))
print(json.dumps([out, loaded]))
"""


def read_in_fresh_process(reads: list[list[Any]]) -> tuple[list[Any], list[str]]:
    return in_fresh_process(reads, _READS)


def created(url: str) -> tuple[Any, Any]:
    streams, durables = StreamProvider(), ConsumerProvider()
    stream = streams.create(streams.check({}, registered_stream(url)).inputs)
    durable = durables.create(durables.check({}, registered_durable(url)).inputs)
    return stream, durable


def without_seen(outs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outs.items() if k != SEEN_KEY}


def test_create_stores_the_digest_of_the_config_it_saw(js: JetStream, nats_server: NatsServer) -> None:
    stream, durable = created(nats_server.url)

    assert stream.outs[SEEN_KEY] == base.seen_digest("ORDERS", js.stream_info("ORDERS") or {})
    assert durable.outs[SEEN_KEY] == base.seen_digest("ORDERS/worker", js.consumer_info("ORDERS", "worker") or {})


def test_an_unchanged_read_reports_the_state_as_the_parse_would_and_loads_no_pydantic(
        js: JetStream, nats_server: NatsServer) -> None:
    stream, durable = created(nats_server.url)

    (fast_stream, fast_durable), loaded = read_in_fresh_process([
        ["stream", stream.id, stream.outs], ["consumer", durable.id, durable.outs]])
    # The same reads from a state without the digest (as written before it existed): parsed.
    (parsed_stream, parsed_durable), loaded_parsing = read_in_fresh_process([
        ["stream", stream.id, without_seen(stream.outs)], ["consumer", durable.id, without_seen(durable.outs)]])

    assert loaded == []
    assert "pydantic" in loaded_parsing and "components.spec.stream" in loaded_parsing
    assert fast_stream == parsed_stream and fast_durable == parsed_durable
    assert fast_stream[1]["max_age"] == "48h" and fast_durable[1]["ack_wait"] == "1m"
    assert SEEN_KEY not in fast_stream[2] and SEEN_KEY not in fast_durable[2]  # an output, never an input


def test_a_hand_edit_on_the_server_is_parsed_and_read(js: JetStream, nats_server: NatsServer) -> None:
    stream, durable = created(nats_server.url)
    config = (js.stream_info("ORDERS") or {})["config"]
    js.stream_update({**config, "max_age": 3600 * 10**9})  # by raw API: 48h -> 1h
    config = (js.consumer_info("ORDERS", "worker") or {})["config"]
    js.consumer_upsert("ORDERS", {**config, "max_deliver": 9}, "update")

    (read_stream, read_durable), loaded = read_in_fresh_process([
        ["stream", stream.id, stream.outs], ["consumer", durable.id, durable.outs]])

    assert "pydantic" in loaded
    assert read_stream[1]["max_age"] == "1h" and read_stream[2]["max_age"] == "1h"
    assert read_durable[1]["max_deliver"] == 9
    assert read_stream[1][SEEN_KEY] == base.seen_digest("ORDERS", js.stream_info("ORDERS") or {})
    assert read_stream[1][SEEN_KEY] != stream.outs[SEEN_KEY]


def test_a_state_written_by_other_code_is_parsed_again(js: JetStream, nats_server: NatsServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    stream, _ = created(nats_server.url)
    parsed: list[str] = []
    spec_of = StreamProvider.spec_of

    def counting(self: StreamProvider, id_: str, info: dict) -> Any:
        parsed.append(id_)
        return spec_of(self, id_, info)

    monkeypatch.setattr(StreamProvider, "spec_of", counting)
    StreamProvider().read(stream.id, stream.outs)
    assert parsed == []  # this code wrote it: trusted

    # The digest another version of the conversion's modules would have stored.
    monkeypatch.setattr(base, "_conversion_digest", lambda: b"other code")
    other = base.seen_digest("ORDERS", js.stream_info("ORDERS") or {})
    monkeypatch.undo()
    monkeypatch.setattr(StreamProvider, "spec_of", counting)

    result = StreamProvider().read(stream.id, {**stream.outs, SEEN_KEY: other})

    assert parsed == ["ORDERS"]
    assert result.outs[SEEN_KEY] == stream.outs[SEEN_KEY]


def test_the_digest_covers_the_conversions_source_files() -> None:
    # Every module named exists, so an edit of any of them changes the digest.
    root = ROOT / "components"
    for pattern in base.CONVERSION_SOURCES:
        assert list(root.glob(pattern)), pattern
    assert {p.name for p in root.glob("spec/*.py")} >= {"stream.py", "consumer.py", "fields.py", "durations.py"}


def _managed(state: dict) -> list[dict]:
    """The streams and durables of an exported stack state."""
    return [r for r in state["deployment"]["resources"]
            if r["type"].endswith((":Stream", ":Consumer")) and r.get("outputs")]


@pytest.mark.pulumi
def test_a_state_written_before_the_digest_refreshes_without_changes_and_gains_it(project: PulumiProject,
                                                                                  tmp_path: Path) -> None:
    # An existing stack after an upgrade of this tool: its state has no `seen` yet.
    project.up()
    state = json.loads(project.run("stack", "export", "--stack", project.stack).stdout)
    assert len(_managed(state)) == 4 and all(SEEN_KEY in r["outputs"] for r in _managed(state))
    for resource in _managed(state):
        del resource["outputs"][SEEN_KEY]
    exported = tmp_path / "state.json"
    exported.write_text(json.dumps(state))
    project.run("stack", "import", "--file", str(exported), "--stack", project.stack)

    # The drift check passes: an output the provider adds is no change of the resource.
    assert project.preview("--refresh", "--expect-no-changes").returncode == 0
    project.refresh("--expect-no-changes")

    state = json.loads(project.run("stack", "export", "--stack", project.stack).stdout)
    assert all(SEEN_KEY in r["outputs"] for r in _managed(state))
