"""The JetStream client against a real nats-server: one connection per process, the fail-fast mode the
hand-over uses (a loopback proxy cuts the connection after a request), nats-py's errors mapped into the
project's vocabulary, and the live-state model parsed from real replies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import nats.js.errors
import pytest

from components.jetstream.client import (
    ConnectionSettings,
    JetStream,
    connect_quickly,
    jetstream_error,
    store_not_created,
)
from components.jetstream.errors import JetStreamAPIError, NatsConnectionError, NoStreamForSubject, StreamNotFound
from components.jetstream.live import LiveConsumer, LiveStream
from tests.harness import NatsServer
from tests.proxy import CUT_AFTER, FORWARD, ApiProxy


def test_connect_quickly_same_servers_reuses_the_process_connection(js: JetStream, nats_server: NatsServer) -> None:
    quick = connect_quickly(ConnectionSettings(servers=nats_server.url))
    assert quick.nc is js.nc
    assert quick.failing_fast(1.0).nc is js.nc


def test_failing_fast_request_connection_cut_after_send_fails_before_its_timeout(nats_server: NatsServer) -> None:
    cut = []

    def hook(subject: str) -> str:
        if subject == "$JS.API.STREAM.INFO.CUT_HERE" and not cut:
            cut.append(subject)
            return CUT_AFTER  # the server answers, the reply never arrives
        return FORWARD

    proxy = ApiProxy(nats_server.port, hook).start()
    try:
        fast = JetStream(ConnectionSettings(servers=proxy.url)).failing_fast(60.0)
        started = time.monotonic()
        with pytest.raises(NatsConnectionError, match="CUT_HERE"):
            fast.stream_info("CUT_HERE")
        # Far below the request's own 60 s timeout: the dropped connection ended the wait.
        assert time.monotonic() - started < 30
        assert cut == ["$JS.API.STREAM.INFO.CUT_HERE"]
    finally:
        proxy.stop()


def test_delete_missing_stream_and_consumer_through_nats_py_are_already_gone(js: JetStream) -> None:
    assert js.stream_delete("NO_SUCH_STREAM") is None
    assert js.consumer_delete("NO_SUCH_STREAM", "nobody") is None
    js.stream_create({"name": "EVENTS", "subjects": ["events.>"], "storage": "memory", "num_replicas": 1})
    js.consumer_upsert("EVENTS", {"durable_name": "worker", "ack_policy": "explicit"}, "create")
    js.consumer_delete("EVENTS", "worker")
    js.stream_delete("EVENTS")
    assert js.consumer_info("EVENTS", "worker") is None and js.stream_info("EVENTS") is None


def test_jetstream_error_nats_py_not_found_becomes_stream_not_found(nats_server: NatsServer) -> None:
    async def ask() -> nats.js.errors.APIError:
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jsm().stream_info("NO_SUCH_STREAM")
        except nats.js.errors.APIError as exc:
            return exc
        finally:
            await nc.close()
        raise AssertionError("stream_info of a missing stream did not fail")

    error = jetstream_error(asyncio.run(ask()), stream="NO_SUCH_STREAM")
    assert isinstance(error, StreamNotFound) and error.err_code == 10059
    assert error.reason == "stream not found (err_code 10059)"


def test_publish_subject_no_stream_stores_raises_no_stream_for_subject(js: JetStream) -> None:
    with pytest.raises(NoStreamForSubject, match="nobody.listens"):
        js.publish("nobody.listens", b"x")


def test_live_state_parsed_from_real_replies_counts_unprocessed_once(js: JetStream) -> None:
    js.stream_create({"name": "EVENTS", "subjects": ["events.>"], "storage": "memory", "num_replicas": 1})
    js.consumer_upsert("EVENTS", {"durable_name": "worker", "ack_policy": "explicit",
                                  "filter_subject": "events.a.>"}, "create")
    for n in range(4):
        js.publish(f"events.a.{n}", b"x")
    js.publish("events.b.0", b"y")

    stream = LiveStream.from_info(js.stream_info("EVENTS") or {}, js.consumer_infos("EVENTS"))
    assert (stream.name, stream.subjects, stream.messages, stream.first_seq, stream.last_seq) == (
        "EVENTS", ("events.>",), 5, 1, 5)
    worker = stream.consumers["worker"]
    assert (worker.pending, worker.ack_pending, worker.unprocessed, worker.filters) == (4, 0, 4, ("events.a.>",))
    assert worker.reads("events.a.9", stream.subjects) and not worker.reads("events.b.0", stream.subjects)
    unfiltered = LiveConsumer.from_info({"name": "all", "config": {}})
    assert unfiltered.reading(stream.subjects) == ("events.>",)


def test_a_create_that_meets_a_store_the_server_cannot_make_is_tried_again(tmp_path: Path) -> None:
    # The server's own race: it removes an account's emptied store directories in the background
    # after the last stream is deleted, and a create meeting that removal cannot make its store.
    # Made lasting here until the server's cleanup of the failed create removes it: the account's
    # directory is a file.
    server = NatsServer(tmp_path, name="store").start()
    try:
        js = JetStream(ConnectionSettings(servers=server.url))
        js.stream_create({"name": "FIRST", "subjects": ["first.>"], "storage": "file"})
        js.stream_delete("FIRST")
        account = server.store / "jetstream" / "$G"
        deadline = time.monotonic() + 5
        while account.exists() and time.monotonic() < deadline:
            try:
                for child in sorted(account.rglob("*"), reverse=True):
                    child.rmdir() if child.is_dir() else child.unlink()
                account.rmdir()
            except OSError:
                time.sleep(0.01)
        account.write_text("in the way")

        info = js.stream_create({"name": "SECOND", "subjects": ["second.>"], "storage": "file"})

        assert info["config"]["name"] == "SECOND"
        assert "Stream create failed for '$G > SECOND'" in server.log.read_text(), "the first try did not meet the fault"
        assert js.stream_names() == ["SECOND"]
    finally:
        server.stop()


@pytest.mark.parametrize(("err_code", "description", "again"), [
    (10049, "error creating store for stream", True),
    (10049, "Error creating store for stream: could not create storage directory", True),
    (10049, "stream name is too long", False),
    (10065, "subjects overlap with an existing stream", False),
])
def test_only_a_store_the_server_could_not_make_is_tried_again(err_code: int, description: str, again: bool) -> None:
    assert store_not_created(JetStreamAPIError(description, err_code=err_code)) is again
