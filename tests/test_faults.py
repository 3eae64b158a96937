"""Subject hand-over under faults, on the stream provider against a real nats-server.

The provider talks to the server through tests/proxy.py, which sees each JetStream
API request: a fault (a refusal, a cut connection, a server restart) is injected at
an exact request, "between the release and the claim", not at a guessed moment.
The Pulumi-level versions, with traffic, are in tests/test_faults_deploy.py. The
last test checks that `verify_phase` (the gate and `eventbus migration verify`) fails
on what such faults leave behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.jetstream.client import ConnectionSettings, JetStream
from components.jetstream.errors import ReplicasUnsupported
from components.migration.handover import ClaimFailed
from components.migration.verify import stored_subjects
from components.pulumi.stream import StreamProvider
from components.spec.stream import CLAIMED, RELEASED, StreamSpec
from tests.harness import NatsServer
from tests.proxy import CUT_AFTER, CUT_BEFORE, FORWARD, ApiProxy

P = StreamProvider()
LEGACY = StreamSpec(name="LEGACY", subjects=("orders.>", "refunds.>"))
ORDERS = StreamSpec(name="ORDERS", subjects=("orders.>",), max_age="48h")
UPDATE = "$JS.API.STREAM.UPDATE."


def props(spec: StreamSpec, url: str, **extra: Any) -> dict[str, Any]:
    return {**spec.props(), "servers": [url], "credentials": {}, "allow_data_loss": False,
            "takeover": ["LEGACY"], "claim_retry_timeout": 10.0, **extra}


class Between:
    """A proxy hook that acts once on the claim: the first update of `gaining` after `losing`'s."""

    def __init__(self, losing: str, gaining: str, action: str = FORWARD, before: Any = None) -> None:
        self.losing, self.gaining, self.action, self.before = losing, gaining, action, before
        self.released = self.fired = False

    def __call__(self, subject: str) -> str:
        if subject == UPDATE + self.losing:
            self.released = True
        elif subject == UPDATE + self.gaining and self.released and not self.fired:
            self.fired = True
            if self.before:
                self.before()
            return self.action
        return FORWARD


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test's own: some tests restart it."""
    started = NatsServer(tmp_path, name="faults").start()
    yield started
    started.stop()


@pytest.fixture
def direct(server: NatsServer) -> JetStream:
    return JetStream(ConnectionSettings(servers=server.url))


def owners(js: JetStream, subject: str) -> list[str]:
    return js.stream_names(subject)


def proxied(server: NatsServer, hook: Any) -> ApiProxy:
    return ApiProxy(server.port, hook).start()


def test_create_refused_by_the_server_releases_nothing(server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(LEGACY.wire())
    proxy = proxied(server, None)
    try:
        with pytest.raises(ReplicasUnsupported) as refused:
            P.create(props(ORDERS.model_copy(update={"replicas": 3}), proxy.url))
    finally:
        proxy.stop()
    assert refused.value.err_code == 10074
    assert proxy.requests(UPDATE + "LEGACY") == []
    assert owners(direct, "orders.>") == ["LEGACY"]


def test_update_refused_by_the_server_releases_nothing(server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(LEGACY.wire())
    direct.stream_create(StreamSpec(name="ORDERS", subjects=("archive.>",)).wire())
    proxy = proxied(server, None)
    try:
        with pytest.raises(ReplicasUnsupported):
            P.update("ORDERS", {}, props(ORDERS.model_copy(update={"replicas": 3, "subjects": ("archive.>", "orders.>")}), proxy.url))
    finally:
        proxy.stop()
    assert proxy.requests(UPDATE + "LEGACY") == []
    assert owners(direct, "orders.>") == ["LEGACY"]


def test_claim_refused_after_the_release_gives_the_subject_back_naming_both_streams(
        server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(LEGACY.wire())
    # Between the release and the claim the gaining stream disappears: the server refuses the claim.
    hook = Between("LEGACY", "ORDERS", before=lambda: direct.stream_delete("ORDERS"))
    proxy = proxied(server, hook)
    try:
        with pytest.raises(ClaimFailed) as failed:
            P.create(props(ORDERS, proxy.url))
    finally:
        proxy.stop()
    assert hook.fired
    assert failed.value.given_back is True
    message = str(failed.value)
    for word in ("orders.>", "ORDERS", "LEGACY", "err_code 10059", "given back"):
        assert word in message
    assert owners(direct, "orders.>") == ["LEGACY"]
    assert sorted(stored_subjects(direct.stream_info("LEGACY")["config"])) == ["orders.>", "refunds.>"]


NARROWING = StreamSpec(name="LEGACY", subjects=("orders.>",))
EU = StreamSpec(name="ORDERS_EU", subjects=("orders.eu.>",))
KEEPS = {"LEGACY": ["orders.us.>"]}


def test_a_narrowing_release_keeps_the_staying_subjects_owned_between_release_and_claim(
        server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(NARROWING.wire())
    direct.publish("orders.us.created", b"before")
    seen: dict[str, list[str]] = {}
    hook = Between("LEGACY", "ORDERS_EU", before=lambda: seen.update(
        us=owners(direct, "orders.us.created"), eu=owners(direct, "orders.eu.created")))
    proxy = proxied(server, hook)
    try:
        P.create(props(EU, proxy.url, keeps=KEEPS))
    finally:
        proxy.stop()

    assert hook.fired
    # Between the two calls only the moving subject has no stream.
    assert seen == {"us": ["LEGACY"], "eu": []}
    assert owners(direct, "orders.us.created") == ["LEGACY"]
    assert owners(direct, "orders.eu.created") == ["ORDERS_EU"]
    config = direct.stream_info("LEGACY")["config"]
    assert stored_subjects(config) == ["orders.us.>"]
    assert config["metadata"][RELEASED + "orders.>"] == "1"


def test_a_narrowing_release_without_keeps_leaves_the_staying_subjects_without_a_stream(
        server: NatsServer, direct: JetStream) -> None:
    """What the keeps are for: without them, orders.us.> waits for LEGACY's own update."""
    direct.stream_create(NARROWING.wire())

    P.create(props(EU, server.url))

    assert owners(direct, "orders.us.created") == []
    assert stored_subjects(direct.stream_info("LEGACY")["config"]) == []


def test_a_refused_claim_after_a_narrowing_release_gives_the_whole_subject_back(
        server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(NARROWING.wire())
    hook = Between("LEGACY", "ORDERS_EU", before=lambda: direct.stream_delete("ORDERS_EU"))
    proxy = proxied(server, hook)
    try:
        with pytest.raises(ClaimFailed) as failed:
            P.create(props(EU, proxy.url, keeps=KEEPS))
    finally:
        proxy.stop()

    assert failed.value.given_back is True
    assert stored_subjects(direct.stream_info("LEGACY")["config"]) == ["orders.>"]
    assert owners(direct, "orders.eu.created") == owners(direct, "orders.us.created") == ["LEGACY"]


@pytest.mark.parametrize("action", [CUT_BEFORE, CUT_AFTER], ids=["claim-lost", "claim-reply-lost"])
def test_connection_cut_at_the_claim_is_retried_and_the_subject_ends_owned(
        server: NatsServer, direct: JetStream, action: str) -> None:
    direct.stream_create(LEGACY.wire())
    hook = Between("LEGACY", "ORDERS", action)
    proxy = proxied(server, hook)
    try:
        created = P.create(props(ORDERS, proxy.url))
    finally:
        proxy.stop()
    assert hook.fired and proxy.cuts >= 1
    assert len(proxy.requests(UPDATE + "ORDERS")) >= 2  # the claim was sent again
    assert owners(direct, "orders.>") == ["ORDERS"]
    assert created.outs["subjects"] == ["orders.>"]
    assert stored_subjects(direct.stream_info("LEGACY")["config"]) == ["refunds.>"]


def test_connection_cut_after_the_release_is_retried_and_the_subject_ends_owned(
        server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(LEGACY.wire())
    proxy = proxied(server, lambda s: CUT_AFTER if s == UPDATE + "LEGACY" else FORWARD)
    try:
        P.create(props(ORDERS, proxy.url))
    finally:
        proxy.stop()
    assert proxy.cuts >= 1
    assert owners(direct, "orders.>") == ["ORDERS"]


def test_server_restart_between_release_and_claim_is_retried_and_the_subject_ends_owned(
        server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(LEGACY.wire())

    def restart() -> None:
        server.stop()
        server.start()

    hook = Between("LEGACY", "ORDERS", CUT_BEFORE, before=restart)
    proxy = proxied(server, hook)
    try:
        P.create(props(ORDERS, proxy.url))
    finally:
        proxy.stop()
    assert hook.fired
    after = JetStream(ConnectionSettings(servers=server.url))
    assert owners(after, "orders.>") == ["ORDERS"]
    assert stored_subjects(after.stream_info("LEGACY")["config"]) == ["refunds.>"]


def test_server_down_longer_than_the_retry_budget_fails_saying_the_subject_may_have_no_stream(
        server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(LEGACY.wire())
    hook = Between("LEGACY", "ORDERS", CUT_BEFORE, before=server.stop)
    proxy = proxied(server, hook)
    try:
        with pytest.raises(ClaimFailed) as failed:
            P.create(props(ORDERS, proxy.url, claim_retry_timeout=1.0))
    finally:
        proxy.stop()
        server.start()
    assert failed.value.given_back is False
    assert "orders.>" in str(failed.value) and "NO stream" in str(failed.value)


def test_claim_records_the_last_sequence_in_the_same_update_and_it_is_not_drift(
        server: NatsServer, direct: JetStream) -> None:
    direct.stream_create(LEGACY.wire())
    direct.stream_create(StreamSpec(name="ORDERS", subjects=("archive.>",)).wire())
    for n in range(3):
        direct.publish("archive.x", str(n).encode())
    direct.publish("orders.old", b"held by LEGACY")
    spec = ORDERS.model_copy(update={"subjects": ("archive.>", "orders.>")})
    created = P.create(props(StreamSpec(name="ORDERS", subjects=("archive.>",)), server.url))
    proxy = proxied(server, None)
    try:
        updated = P.update("ORDERS", created.outs, props(spec, proxy.url))
    finally:
        proxy.stop()

    assert len(proxy.requests(UPDATE + "ORDERS")) == 2  # the config, then the claim carrying the position
    meta = direct.stream_info("ORDERS")["config"]["metadata"]
    assert meta[CLAIMED + "orders.>"] == "3"
    assert direct.stream_info("LEGACY")["config"]["metadata"][RELEASED + "orders.>"] == "1"
    assert P.diff("ORDERS", updated.outs, props(spec, proxy.url)).changes is False
    # A later update keeps the position while the stream owns the subject.
    P.update("ORDERS", updated.outs, props(spec.model_copy(update={"description": "orders"}), server.url))
    assert direct.stream_info("ORDERS")["config"]["metadata"][CLAIMED + "orders.>"] == "3"


def test_verify_fails_on_a_subject_with_no_stream_and_on_one_with_the_wrong_stream(js: JetStream) -> None:
    from components.migration.verify import passed, verify_phase
    from components.spec.stack import parse_stack_config
    from tests.harness import advance

    stack = parse_stack_config({"phase": 1, "natsUrl": "nats://x"})
    advance(js, 0, stack)
    advance(js, 1, stack)
    vendor = StreamSpec.from_wire(js.stream_info("AA_VENDOR_HOT")["config"])
    js.stream_update(vendor.model_copy(update={"subjects": ()}).wire())  # released, never claimed

    unowned = {f.target: f for f in verify_phase(js, stack, 1)}["subject vendor.>"]
    assert unowned.status == "fail" and "no stream owns it (expected AA_VENDOR_HOT)" in unowned.message

    legacy = StreamSpec.from_wire(js.stream_info("ATHLETE_ALLY_EVENTS")["config"])
    js.stream_update(legacy.model_copy(update={"subjects": (*legacy.subjects, "vendor.>")}).wire())
    findings = verify_phase(js, stack, 1)
    wrong = {f.target: f for f in findings}["subject vendor.>"]
    assert wrong.status == "fail" and "owned by ATHLETE_ALLY_EVENTS, expected AA_VENDOR_HOT" in wrong.message
    assert not passed(findings)
