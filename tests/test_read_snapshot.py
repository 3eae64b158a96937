"""A refresh's reads come from one listing of the server (components.pulumi.snapshot), on a real nats-server.

Requests are counted by subject as the providers send them to the server; the answers are the server's.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from components.jetstream.client import JetStream
from components.pulumi.base import jetstream
from components.pulumi.consumer import ConsumerProvider
from components.pulumi.snapshot import SNAPSHOT, Snapshot
from components.pulumi.stream import StreamProvider
from components.spec.consumer import ConsumerSpec
from components.spec.stream import StreamSpec
from tests.harness import NatsServer
from tests.test_consumer import props as props_of_durable
from tests.test_stream import props as props_of_stream

STREAMS, DURABLES = StreamProvider(), ConsumerProvider()
COUNT = 6


def stream_props(i: int, url: str) -> dict[str, Any]:
    return props_of_stream(StreamSpec(name=f"READ_{i}", subjects=[f"read.{i}.>"], max_age="48h"), url)


def durable_props(i: int, url: str, durable: str = "worker") -> dict[str, Any]:
    spec = ConsumerSpec(stream=f"READ_{i}", durable_name=durable, filter_subjects=[f"read.{i}.>"], ack_wait="60s")
    return props_of_durable(spec, url, stream_subjects=[f"read.{i}.>"])


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """The $JS.API requests sent from here on, by kind (STREAM.INFO, CONSUMER.LIST, ...)."""
    seen: collections.Counter[str] = collections.Counter()
    send = JetStream.request

    def counted(self: JetStream, subject: str, *args: Any, **kwargs: Any) -> dict:
        seen[".".join(subject.split(".")[2:4])] += 1
        return send(self, subject, *args, **kwargs)

    monkeypatch.setattr(JetStream, "request", counted)
    yield seen


@pytest.fixture
def created(js: JetStream, nats_server: NatsServer) -> list[tuple[str, dict, str, dict]]:
    made = []
    for i in range(COUNT):
        stream = STREAMS.create(stream_props(i, nats_server.url))
        first = DURABLES.create(durable_props(i, nats_server.url))
        DURABLES.create(durable_props(i, nats_server.url, "other"))
        made.append((stream.id, stream.outs, first.id, first.outs))
    return made


def test_a_refresh_lists_the_streams_once_and_each_streams_durables_once(
        created: list, requests: collections.Counter[str]) -> None:
    direct = [(STREAMS.fetch(jetstream(outs), sid), DURABLES.fetch(jetstream(couts), cid))
              for sid, outs, cid, couts in created]
    requests.clear()
    for (sid, outs, cid, couts), (stream_info, durable_info) in zip(created, direct, strict=True):
        assert STREAMS.read(sid, outs).outs == STREAMS.read_from(sid, outs, stream_info).outs
        assert DURABLES.read(cid, couts).outs == DURABLES.read_from(cid, couts, durable_info).outs
        DURABLES.read(cid.replace("/worker", "/other"), couts)
    assert requests == {"STREAM.LIST": 1, "CONSUMER.LIST": COUNT}, "one listing per stream, not a request per read"


def test_a_stream_created_after_the_listing_is_read_directly_not_dropped(
        created: list, js: JetStream, nats_server: NatsServer) -> None:
    sid, outs, _, _ = created[0]
    STREAMS.read(sid, outs)  # the listing is taken
    late = stream_props(99, nats_server.url)
    js.stream_create(STREAMS.parse(late).wire())  # by raw API: the listing does not know it
    result = STREAMS.read("READ_99", {**late, "stream_name": "READ_99"})
    assert result.id == "READ_99"
    assert result.outs["subjects"] == ["read.99.>"]


def test_a_write_in_the_process_drops_the_listing_so_the_next_read_sees_it(
        created: list, nats_server: NatsServer) -> None:
    sid, outs, cid, couts = created[0]
    STREAMS.read(sid, outs)
    DURABLES.read(cid, couts)
    wider = {**stream_props(0, nats_server.url), "subjects": ["read.0.>", "more.0.>"]}
    STREAMS.update(sid, outs, wider)
    assert sorted(STREAMS.read(sid, outs).outs["subjects"]) == ["more.0.>", "read.0.>"]
    DURABLES.delete(cid, {**couts, "allow_data_loss": True})
    assert DURABLES.read(cid, couts).id == ""  # gone: Pulumi drops it


def test_a_listing_past_its_lifetime_is_taken_again(
        created: list, js: JetStream, requests: collections.Counter[str]) -> None:
    sid, outs, _, _ = created[0]
    STREAMS.read(sid, outs)
    js.stream_delete(sid)  # by raw API, behind the provider's back
    assert STREAMS.read(sid, outs).id == sid  # within the lifetime: the listing of a moment ago
    time.sleep(SNAPSHOT.lifetime + 0.1)
    assert STREAMS.read(sid, outs).id == ""
    assert requests["STREAM.LIST"] == 2


class _Lister:
    """A stand-in for the client in the listing's own logic (no server): each listing
    waits for `release` and records when it was taken."""

    def __init__(self) -> None:
        self.settings = type("Settings", (), {"cache_key": staticmethod(lambda: "k")})()
        self.release = threading.Event()
        self.started: list[str] = []
        self.both_started = threading.Event()

    def stream_infos(self) -> list[dict]:
        self.started.append("streams")
        assert self.release.wait(5)
        return [{"config": {"name": "S"}}]

    def consumer_infos(self, stream: str) -> list[dict]:
        self.started.append(stream)
        if len(self.started) == 2:
            self.both_started.set()
        # Held until the other stream's listing has started: taken one after the other, this times out.
        assert self.both_started.wait(5), "the durables of two streams were not listed at the same time"
        return [{"name": "worker"}]


def test_the_durables_of_two_streams_are_listed_at_the_same_time() -> None:
    snapshot, lister = Snapshot(), _Lister()
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda s: snapshot.consumer_info(lister, s, "worker"), ["A", "B"]))  # type: ignore[arg-type]

    assert found == [{"name": "worker"}, {"name": "worker"}]
    assert sorted(lister.started) == ["A", "B"]


def test_a_listing_taken_while_a_write_drops_the_listings_is_not_kept() -> None:
    snapshot, lister = Snapshot(), _Lister()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(snapshot.stream_info, lister, "S")  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while not lister.started and time.monotonic() < deadline:
            time.sleep(0.01)
        snapshot.drop()  # a write in the process, while the listing is being taken
        lister.release.set()
        assert reading.result(5) == {"config": {"name": "S"}}

    snapshot.stream_info(lister, "S")  # type: ignore[arg-type]
    assert lister.started == ["streams", "streams"], "the listing taken across the drop was kept"
