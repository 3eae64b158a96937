"""The service binding library against a real nats-server: bind with fallback, the pull loop's ack / nak /
DLQ, rebinding when the consumer disappears, and draining a backlog left in a later candidate."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from components.binding import BindError, PoisonMessage, Probe, RetryableError, Worker, bind, choose
from components.jetstream.client import ConnectionSettings, JetStream
from components.spec.consumer import ConsumerSpec
from components.spec.stack import StackConfig, parse_stack_config
from tests import harness
from tests.harness import NatsServer

LEGACY, CORE, VENDOR, DLQ = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT", "AA_DLQ"
HRV = "normalize-hrv-durable"
HRV_SUBJECT = "athlete-ally.hrv.raw-received"
STACK = parse_stack_config({"phase": 0, "natsUrl": "nats://unused:4222"})


# -- helpers ---------------------------------------------------------------------------
def advance(js: JetStream, phase: int, stack: StackConfig = STACK) -> None:
    harness.advance(js, phase, stack)


def publish(js: JetStream, subject: str, payloads: list[str]) -> None:
    for payload in payloads:
        js.publish(subject, payload.encode())


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def unprocessed(js: JetStream, stream: str, durable: str = HRV) -> int:
    info = js.consumer_info(stream, durable)
    assert info is not None, f"{stream}/{durable} missing"
    return int(info["num_pending"]) + int(info["num_ack_pending"])


def dlq_message(js: JetStream, seq: int = 1) -> tuple[bytes, str]:
    """(payload, raw header block) of a message stored in AA_DLQ."""
    msg = js.request(f"$JS.API.STREAM.MSG.GET.{DLQ}", {"seq": seq}, stream=DLQ)["message"]
    return base64.b64decode(msg.get("data", "")), base64.b64decode(msg["hdrs"]).decode()


class Seen:
    """A handler that records (stream, payload) and fails as told by the payload's prefix."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.retried: set[str] = set()

    def __call__(self, msg: Msg) -> None:
        payload = msg.data.decode()
        self.items.append((msg.metadata.stream, payload))
        if payload.startswith("poison"):
            raise PoisonMessage(f"cannot parse {payload}")
        if payload.startswith("always-retry"):
            raise RetryableError("downstream unavailable")
        if payload.startswith("retry-once") and payload not in self.retried:
            self.retried.add(payload)
            raise RetryableError("downstream busy")
        if payload.startswith("boom-once") and payload not in self.retried:
            self.retried.add(payload)
            raise KeyError(payload)

    def payloads(self) -> list[str]:
        return [p for _, p in self.items]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger(f"test.worker.{time.monotonic_ns()}")
    logger.setLevel(logging.DEBUG)
    handler = Lines()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def worker(url: str, handler: Callable, candidates: list[str], log: logging.Logger | None = None) -> Worker:
    w = Worker(ConnectionSettings(servers=url), HRV, candidates, handler, fetch_timeout=0.3, nak_delay=0.2, log=log)
    w.check_interval = 0.5
    w.retry_delay = 0.2
    return w


async def _bind(url: str, durable: str, candidates: list[str]) -> str:
    nc = await nats.connect(url)
    try:
        stream, sub = await bind(nc.jetstream(), durable, candidates)
        await sub.unsubscribe()
        return stream
    finally:
        await nc.close()


# -- choose (pure) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        ([Probe(CORE, False, "stream not found"), Probe(LEGACY, True, unprocessed=4)], LEGACY),
        ([Probe(CORE, True), Probe(LEGACY, True)], CORE),
        ([Probe(CORE, True, unprocessed=9), Probe(LEGACY, True, unprocessed=1)], LEGACY),
        ([Probe(CORE, True), Probe(VENDOR, True, unprocessed=2), Probe(LEGACY, True, unprocessed=3)], LEGACY),
        ([Probe(CORE, True), Probe(VENDOR, True, unprocessed=2), Probe(LEGACY, True)], VENDOR),
        ([Probe(CORE, True), Probe(LEGACY, False, "consumer not found")], CORE),
        ([Probe(CORE, False), Probe(LEGACY, False)], None),
        ([], None),
    ],
)
def test_choose_later_candidate_with_backlog_drained_first(probes: list[Probe], expected: str | None) -> None:
    assert choose(probes) == expected


# -- bind ------------------------------------------------------------------------------
def test_bind_new_stream_absent_falls_back_to_legacy(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)  # hrv still lives on the legacy stream; AA_CORE_HOT does not exist
    assert asyncio.run(_bind(nats_server.url, HRV, [CORE, LEGACY])) == LEGACY


def test_bind_both_candidates_have_durable_first_wins(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    advance(js, 2)  # the legacy stream keeps its (empty) hrv durable next to the new one
    assert js.consumer_info(LEGACY, HRV) is not None
    assert asyncio.run(_bind(nats_server.url, HRV, [CORE, LEGACY])) == CORE


def test_bind_no_candidate_has_durable_reports_every_candidate(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    js.consumer_upsert(LEGACY, ConsumerSpec(stream=LEGACY, durable_name="pusher", deliver_subject="push.here",
                                            filter_subjects=("athlete-ally.>",)).wire(), "create")
    with pytest.raises(BindError) as err:
        asyncio.run(_bind(nats_server.url, "pusher", [CORE, VENDOR, DLQ, LEGACY]))
    assert err.value.tried == [
        (CORE, "stream not found (err_code 10059)"),
        (VENDOR, "consumer not found (err_code 10014)"),
        (DLQ, "consumer not found (err_code 10014)"),
        (LEGACY, "is a push consumer (deliver_subject set); a pull worker cannot bind it"),
    ]
    for stream, _ in err.value.tried:
        assert stream in str(err.value)


# -- the pull loop ---------------------------------------------------------------------
def test_worker_acks_naks_retryable_and_dead_letters_poison(
        js: JetStream, nats_server: NatsServer, lines: tuple[logging.Logger, Lines]) -> None:
    logger, handler = lines
    advance(js, 2)
    publish(js, HRV_SUBJECT, ["ok-1", "retry-once-2", "poison-3", "boom-once-4", "ok-5"])
    seen = Seen()
    w = worker(nats_server.url, seen, [CORE, LEGACY], log=logger)
    w.start()
    try:
        assert wait_until(lambda: w.stats["acked"] == 4 and w.stats["dead_lettered"] == 1)
        assert wait_until(lambda: unprocessed(js, CORE) == 0)
    finally:
        w.stop()
    assert w.stats["nacked"] == 2 and w.stats["termed"] == 1
    assert sorted(seen.payloads()) == sorted(["ok-1", "retry-once-2", "retry-once-2", "poison-3", "boom-once-4",
                                              "boom-once-4", "ok-5"])
    assert js.stream_info(DLQ)["state"]["messages"] == 1
    payload, headers = dlq_message(js)
    assert payload == b"poison-3"
    for header in (f"AA-Original-Subject: {HRV_SUBJECT}", f"AA-Original-Stream: {CORE}", "AA-Original-Sequence: 3",
                   f"AA-Durable: {HRV}", "AA-Error: poison: cannot parse poison-3"):
        assert header in headers
    assert handler.lines, "the worker logs"
    for line in handler.lines:
        assert f"durable={HRV}" in line and "stream=" in line, line
    assert any(f"stream={CORE}" in line and "dead-lettered" in line for line in handler.lines)


def test_worker_dlq_publish_fails_naks_instead_of_term(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 2)
    js.stream_delete(DLQ)
    publish(js, HRV_SUBJECT, ["poison-1"])
    w = worker(nats_server.url, Seen(), [CORE, LEGACY])
    w.start()
    try:
        assert wait_until(lambda: w.stats["nacked"] >= 2)
    finally:
        w.stop()
    assert w.stats["termed"] == 0 and w.stats["dead_lettered"] == 0
    assert js.stream_info(CORE)["state"]["messages"] == 1, "the message is still there"
    info = js.consumer_info(CORE, HRV)
    assert info["num_redelivered"] >= 1 or info["num_ack_pending"] + info["num_pending"] >= 1


def test_worker_retryable_on_last_delivery_dead_lettered(js: JetStream, nats_server: NatsServer) -> None:
    stack = parse_stack_config({"phase": 2, "natsUrl": "nats://unused:4222", "consumers": {"hrv": {"maxDeliver": 2}}})
    advance(js, 2, stack)
    publish(js, HRV_SUBJECT, ["always-retry-1"])
    seen = Seen()
    w = worker(nats_server.url, seen, [CORE, LEGACY])
    w.start()
    try:
        assert wait_until(lambda: w.stats["dead_lettered"] == 1)
    finally:
        w.stop()
    assert seen.payloads() == ["always-retry-1", "always-retry-1"]
    _, headers = dlq_message(js)
    assert "AA-Error: retryable on the last delivery (2/2): downstream unavailable" in headers
    assert unprocessed(js, CORE) == 0


def test_worker_async_handler_awaited_in_callers_loop(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 2)
    publish(js, HRV_SUBJECT, ["a", "b"])
    got: list[str] = []

    async def handler(msg: Msg) -> None:
        await asyncio.sleep(0)
        got.append(msg.data.decode())

    async def go() -> None:
        w = worker(nats_server.url, handler, [CORE, LEGACY])
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        for _ in range(200):
            if w.stats["acked"] == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert w.bound_stream is None, "unbound once stopped"

    asyncio.run(go())
    assert got == ["a", "b"]


# -- migration under the worker ----------------------------------------------------------
def test_worker_drains_legacy_backlog_before_moving_to_core(js: JetStream, nats_server: NatsServer) -> None:
    advance(js, 1)
    publish(js, HRV_SUBJECT, [f"old-{i}" for i in range(5)])
    advance(js, 2)  # subjects move to AA_CORE_HOT; the legacy durable keeps 5 unprocessed
    publish(js, HRV_SUBJECT, [f"new-{i}" for i in range(3)])
    assert unprocessed(js, LEGACY) == 5 and unprocessed(js, CORE) == 3
    seen = Seen()
    w = worker(nats_server.url, seen, [CORE, LEGACY])
    w.start()
    try:
        assert w.wait_bound(timeout=10)
        assert wait_until(lambda: len(seen.items) == 8)
        assert w.wait_bound(CORE, timeout=10)
    finally:
        w.stop()
    assert seen.items == [(LEGACY, f"old-{i}") for i in range(5)] + [(CORE, f"new-{i}") for i in range(3)]
    assert unprocessed(js, LEGACY) == 0 and unprocessed(js, CORE) == 0


def test_worker_stream_deleted_rebinds_to_legacy_then_back(js: JetStream, nats_server: NatsServer,
                                                           lines: tuple[logging.Logger, Lines]) -> None:
    logger, handler = lines
    advance(js, 1)
    advance(js, 2)
    seen = Seen()
    w = worker(nats_server.url, seen, [CORE, LEGACY], log=logger)
    w.start()
    try:
        assert w.wait_bound(CORE, timeout=10)
        js.stream_delete(CORE)
        assert w.wait_bound(LEGACY, timeout=10), "falls back to the legacy stream's durable"
        advance(js, 2)  # AA_CORE_HOT comes back (a rollback undone)
        assert w.wait_bound(CORE, timeout=10)
        publish(js, HRV_SUBJECT, ["after"])
        assert wait_until(lambda: (CORE, "after") in seen.items)
    finally:
        w.stop()
    assert w.stats["rebinds"] >= 2
    assert any(f"stream={CORE}" in line and "fetch failed, rebinding: no responders" in line for line in handler.lines)
    assert any(f"stream={LEGACY}" in line and "bound (passed over AA_CORE_HOT: stream not found (err_code 10059))"
               in line for line in handler.lines)


def test_worker_no_candidate_retries_then_binds_when_created(js: JetStream, nats_server: NatsServer,
                                                            lines: tuple[logging.Logger, Lines]) -> None:
    logger, handler = lines
    seen = Seen()
    w = worker(nats_server.url, seen, [CORE, LEGACY], log=logger)
    w.start()
    try:
        assert wait_until(lambda: w.stats["bind_attempts"] >= 3)
        assert w.bound_stream is None
        advance(js, 0)
        assert w.wait_bound(LEGACY, timeout=10)
        publish(js, HRV_SUBJECT, ["first"])
        assert wait_until(lambda: seen.items == [(LEGACY, "first")])
    finally:
        w.stop()
    retries = [line for line in handler.lines if "not bound, retrying" in line]
    assert retries and all("AA_CORE_HOT: stream not found" in line and "stream=-" in line for line in retries)


def test_worker_server_restart_reconnects_and_keeps_consuming(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, name="restart").start()
    try:
        js = JetStream(ConnectionSettings(servers=server.url))
        advance(js, 2)
        seen = Seen()
        w = worker(server.url, seen, [CORE, LEGACY])
        w.start()
        try:
            assert w.wait_bound(CORE, timeout=10)
            server.stop()
            server.start()
            js = JetStream(ConnectionSettings(servers=server.url))
            assert wait_until(lambda: js.stream_info(CORE) is not None, 15)
            publish(js, HRV_SUBJECT, ["after-restart"])
            assert wait_until(lambda: (CORE, "after-restart") in seen.items, 30)
        finally:
            w.stop()
    finally:
        server.stop()
