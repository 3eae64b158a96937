"""Session fixtures: one real nats-server, one 3-node cluster (started on first use)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from components.jetstream.client import ConnectionSettings, JetStream
from tests.harness import NatsCluster, NatsServer, PulumiProject


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


def _wipe(js: JetStream) -> None:
    for name in js.stream_names():
        js.stream_delete(name)
    # This process's providers answer reads from a listing of the server (components.pulumi.snapshot):
    # none taken in an earlier test outlives the wipe.
    from components.pulumi.snapshot import SNAPSHOT

    SNAPSHOT.drop()


@pytest.fixture
def js(nats_server: NatsServer) -> JetStream:
    """A JetStream client on the session server, with no streams left from earlier tests."""
    client = JetStream(ConnectionSettings(servers=nats_server.url))
    _wipe(client)
    return client


@pytest.fixture
def cluster_js(nats_cluster: NatsCluster) -> JetStream:
    client = JetStream(ConnectionSettings(servers=nats_cluster.url))
    _wipe(client)
    return client


@pytest.fixture
def project(tmp_path: Path, js: JetStream, nats_server: NatsServer) -> PulumiProject:
    """The Pulumi program on a fresh stack pointed at the (wiped) session server."""
    return PulumiProject(tmp_path, config={"phase": 0, "natsUrl": nats_server.url, "replicas": 1})
