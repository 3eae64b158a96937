"""A second topology, declared as data, walks its phases forwards and back under traffic: nothing is lost.

examples/topology-orders.yaml: ORDERS (orders.>) split into ORDERS_EU (orders.eu.>) and
ORDERS_US (orders.us.>) over phases 0-2, a durable per region and a DLQ. Real
nats-server (and the 3-node cluster, replicas 3), the real Pulumi CLI, the retrying
publisher, and workers bound through components.binding with the candidates the
program exports (`bindings`), as a service reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from components.jetstream.client import ConnectionSettings, JetStream
from components.migration.probe import BODY_PREFIX
from components.migration.topology import phase_topology
from components.migration.verify import passed, stored_subjects, verify_phase
from components.spec.stack import parse_stack_config
from tests.harness import NatsServer, PulumiProject, advance
from tests.test_migration import gate_probes, settle_then_stop
from tests.test_topology_data import example
from tests.traffic import OwnerWatch, Publisher, Recorder

pytestmark = pytest.mark.pulumi

ORDERS = example("orders")
SUBJECTS = ("orders.eu.created", "orders.us.created")


def orders_workers(url: str, bindings: dict[str, dict], handler: Recorder) -> list:
    """One worker per durable, trying the candidate streams the program exported for it."""
    from components.binding import Worker

    settings = ConnectionSettings(servers=url)
    started = [Worker(settings, durable, binding["candidates"], handler, dlq_subject="dlq.orders.fulfil",
                      fetch_timeout=0.5) for durable, binding in sorted(bindings.items())]
    for worker in started:
        worker.start()
    return started


def check_orders_phase(js: JetStream, phase: int, probes: list[dict] | None = None) -> list[dict]:
    """The orders table's phase, as the server really stores it, and the gate's `probes` of it: one per
    subject pattern, each stored by the expected stream and deleted. Returns the probes."""
    stack = parse_stack_config({"phase": phase, "natsUrl": "nats://x", "topology": ORDERS})
    findings = verify_phase(js, stack, phase)
    assert passed(findings), [f for f in findings if f.status == "fail"]
    topology = phase_topology(stack)
    for spec in topology.streams:
        assert sorted(stored_subjects(js.stream_info(spec.name)["config"])) == sorted(spec.subjects), spec.name
    for consumer in topology.consumers:
        assert js.consumer_info(consumer.stream, consumer.durable_name) is not None, consumer.id
    if probes is not None:
        assert len(probes) == sum(len(s.subjects) for s in topology.streams), probes
        assert all(p["actual"] == p["expected"] and p["deleted"] for p in probes), probes
    return probes or []


@pytest.mark.parametrize("where", ["server", pytest.param("cluster", marks=pytest.mark.cluster)])
def test_walk_orders_0_1_2_1_0_with_traffic_processes_every_published_message(
        where: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if where == "server":
        js, url = request.getfixturevalue("js"), request.getfixturevalue("nats_server").url
        replicas, publish_url = 1, url
    else:
        js, cluster = request.getfixturevalue("cluster_js"), request.getfixturevalue("nats_cluster")
        url, replicas, publish_url = cluster.url, 3, cluster.nodes[0].url
    project = PulumiProject(tmp_path, stack="orders", config={
        "phase": 0, "natsUrl": url, "replicas": replicas, "topology": ORDERS})
    project.up()
    check_orders_phase(js, 0)
    bindings = project.outputs()["bindings"]
    assert bindings == {"fulfil-eu": {"stream": "ORDERS", "candidates": ["ORDERS_EU", "ORDERS"]},
                        "fulfil-us": {"stream": "ORDERS", "candidates": ["ORDERS_US", "ORDERS"]}}

    seen = Recorder()
    running = orders_workers(publish_url, bindings, seen)
    publisher = Publisher(publish_url, SUBJECTS, interval=0.005).start()
    watch = OwnerWatch(publish_url, SUBJECTS).start()
    probes: list[dict] = []
    unowned: dict[tuple[int, int], set[str]] = {}
    try:
        previous = 0
        for phase in (1, 2, 1, 0):
            project.set("phase", phase)
            mark = len(watch.unowned)
            project.up()
            unowned[previous, phase] = watch.since(mark)
            assert project.outputs()["phase"] == phase
            probes += check_orders_phase(js, phase, gate_probes(project))
            previous = phase
    finally:
        publisher.stop()
        watch.stop()
    missing = settle_then_stop(project, publisher, seen, running, reapply=True)

    # A subject a move leaves with its stream never goes without one: in 0 -> 1 ORDERS narrows from
    # orders.> to orders.us.> as it releases orders.> to ORDERS_EU, in the same call.
    assert watch.polls > 100
    stays = {(0, 1): "orders.us.created", (1, 2): "orders.eu.created", (2, 1): "orders.eu.created",
             (1, 0): "orders.us.created"}
    assert {step: subject for step, subject in stays.items() if subject in unowned[step]} == {}, unowned

    assert len(publisher.acked) > 300
    assert missing == set(), f"{len(missing)} of {len(publisher.acked)} published messages were never processed"
    # The subjects really moved: messages were processed on every stream that owned them.
    assert {"ORDERS", "ORDERS_EU", "ORDERS_US"} <= set().union(*seen.seen.values())
    assert not [i for i in seen.ids() if i.startswith(BODY_PREFIX)]
    for name in js.stream_names():
        assert js.stream_info(name)["config"]["num_replicas"] == replicas, name
    # A durable kept at the last up because it still held messages was drained: the up after settling
    # removed it, and nothing is left to do.
    assert js.consumer_info("ORDERS_EU", "fulfil-eu") is None
    assert js.consumer_info("ORDERS_US", "fulfil-us") is None
    assert project.preview("--expect-no-changes").returncode == 0


def test_cli_orders_stack_info_plan_verify_and_diagnostic_follow_the_table(
        js: JetStream, nats_server: NatsServer, tmp_path: Path) -> None:
    from components.cli.main import main

    stack_file = tmp_path / "Pulumi.orders.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {"aa-event-bus:phase": 1, "aa-event-bus:natsUrl": nats_server.url,
                                                     "aa-event-bus:topology": ORDERS}}, sort_keys=False))
    advance(js, 0, parse_stack_config({"phase": 0, "natsUrl": nats_server.url, "topology": ORDERS}))
    advance(js, 1, parse_stack_config({"phase": 1, "natsUrl": nats_server.url, "topology": ORDERS}))

    def cli(*args: str) -> tuple[int, dict]:
        result = CliRunner().invoke(main, ["--stack-config", str(stack_file), "--json", *args])
        return result.exit_code, json.loads(result.stdout)

    code, info = cli("stream", "info")
    assert code == 0
    assert [(s["name"], s["role"], s["subjects"]) for s in info["streams"]] == [
        ("ORDERS", "source", ["orders.us.>"]), ("ORDERS_EU", "region", ["orders.eu.>"]), ("ORDERS_US", "region", []),
        ("ORDERS_DLQ", "dlq", ["dlq.orders.>"])]
    assert cli("migration", "verify", "1")[0] == 0
    assert cli("migration", "verify", "2")[0] == 1
    code, plan = cli("plan", "2")
    assert code == 0
    assert [(o["subject"], o["now"], o["then"]) for o in plan["subjects"] if o["moves"]] == [
        ("orders.us.>", "ORDERS", "ORDERS_US")]
    assert [(c["durable"], c["stream"], c["then"]) for c in plan["consumers"]] == [("fulfil-us", "ORDERS", "ORDERS_US")]
    assert cli("consumer", "diagnostic", "ORDERS_EU", "fulfil-eu")[0] == 0
