"""A shared, locked state backend: the stack's state in a real PostgreSQL server.

Pulumi's DIY backends include PostgreSQL (`postgres://`, pkg/v3 backend/diy/postgres,
in the CLI built here and in the released one). tests/postgres.py starts Debian's
PostgreSQL on loopback; each test keeps its state in its own table. The walk is a
shorter one than tests/test_migration.py's (0, 1, 2, 1) with the same retrying
publisher and binding workers. The concurrent test runs `pulumi up` of one stack
from two checkouts (two project directories, one backend): the second starts while
the first holds the stack's lock, and fails on it with Pulumi's own message; the
state stays whole and a further `pulumi up` has nothing to do. The last test shows
which backend a command uses: PULUMI_BACKEND_URL over Pulumi.yaml's `backend.url`
(file://./.pulumi-state?metadata=skip) over `pulumi login`.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.jetstream.client import JetStream
from tests.harness import ROOT, NatsServer, PulumiProject, bare_pulumi
from tests.postgres import PostgresServer
from tests.test_migration import SUBJECTS, check_phase, settle_then_stop, workers
from tests.traffic import Publisher, Recorder

pytestmark = pytest.mark.pulumi

LOCKED = "the stack is currently locked by 1 lock(s)"
STREAM_TYPE = "pulumi-python:dynamic/jetstream:Stream"
CONSUMER_TYPE = "pulumi-python:dynamic/jetstream:Consumer"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


def keys(pg: PostgresServer, table: str, like: str) -> list[str]:
    return pg.query(f"SELECT key FROM {table} WHERE key LIKE '{like}' ORDER BY key")


def state_of(project: PulumiProject) -> dict:
    """The stack's state (`pulumi stack export`), parsed: torn state does not parse or load."""
    return json.loads(project.export())


def managed(state: dict) -> tuple[set[str], set[tuple[str, str]]]:
    """(stream names, (stream, durable) pairs) in a stack's state, each resource once."""
    resources = state["deployment"]["resources"]
    urns = [r["urn"] for r in resources]
    assert len(urns) == len(set(urns)), "a resource appears twice in the state"
    streams = {r["outputs"]["stream_name"] for r in resources if r["type"] == STREAM_TYPE}
    consumers = {(r["outputs"]["stream"], r["outputs"]["durable_name"]) for r in resources if r["type"] == CONSUMER_TYPE}
    return streams, consumers


def on_server(js: JetStream) -> tuple[set[str], set[tuple[str, str]]]:
    streams = set(js.stream_names())
    consumers = {(s, c["name"]) for s in streams for c in js.consumer_infos(s)}
    return streams, consumers


def test_walk_with_state_in_postgresql_moves_every_phase_and_processes_every_message(
        tmp_path: Path, js: JetStream, nats_server: NatsServer, postgres: PostgresServer) -> None:
    project = PulumiProject(tmp_path, config={"phase": 0, "natsUrl": nats_server.url, "replicas": 1},
                            backend=postgres.url("walk_state"))
    project.up()
    seen = Recorder()
    running = workers(nats_server.url, seen)
    publisher = Publisher(nats_server.url, SUBJECTS, interval=0.005).start()
    try:
        for phase in (1, 2, 1):
            project.set("phase", phase)
            project.up()
            check_phase(js, phase)
            assert project.outputs()["phase"] == phase
    finally:
        publisher.stop()
    missing = settle_then_stop(project, publisher, seen, running)
    assert len(publisher.acked) > 200
    assert missing == set(), f"{len(missing)} of {len(publisher.acked)} published messages were never processed"
    # The state lives in PostgreSQL, not in a local folder.
    assert keys(postgres, "walk_state", "%/.pulumi/stacks/aa-event-bus/test.json") != []
    assert list((tmp_path / "state").iterdir()) == []
    assert managed(state_of(project)) == on_server(js)


def test_up_from_two_checkouts_at_once_the_second_fails_on_the_lock_and_the_state_stays_whole(
        tmp_path: Path, js: JetStream, nats_server: NatsServer, postgres: PostgresServer) -> None:
    table = "race_state"
    first = PulumiProject(tmp_path / "a", config={"phase": 0, "natsUrl": nats_server.url, "replicas": 1},
                          backend=postgres.url(table))
    first.up()
    # The first deploy holds its lock until the second has tried (its phase 1 rollout hook waits for
    # `release`, at most 60 s): however fast a deploy is, the two overlap.
    release = tmp_path / "release"
    first.set("rolloutHooks", {"1": f"i=0; while [ ! -e {release} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"})
    # The second checkout: the same committed stack file, the stack already in the backend.
    second = PulumiProject(tmp_path / "b", backend=postgres.url(table), init_stack=False)
    shutil.copy(first.stack_file, second.stack_file)
    for checkout in (first, second):
        checkout.set("phase", 1)

    running = subprocess.Popen(
        ["pulumi", "up", "--yes", "--skip-preview", "--stack", first.stack, "--non-interactive", "--cwd", str(first.dir)],
        env=first.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not keys(postgres, table, "%/.pulumi/locks/%") and running.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.poll() is None, "the first `pulumi up` ended before its lock was seen"
        assert len(keys(postgres, table, "%/.pulumi/locks/%")) == 1
        blocked = second.up(check=False)
        release.touch()
        out, err = running.communicate(timeout=300)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(10)

    assert running.returncode == 0, out[-3000:] + err[-3000:]
    assert blocked.returncode != 0
    message = blocked.stdout + blocked.stderr
    assert LOCKED in message, message[-3000:]
    assert postgres.password not in message, "the lock message shows the backend's password"
    # Nothing half-written: no lock left, the state parses, holds each resource once and
    # matches the server, and a further `pulumi up` from the other checkout changes nothing.
    assert keys(postgres, table, "%/.pulumi/locks/%") == []
    state = state_of(second)
    assert managed(state) == on_server(js)
    check_phase(js, 1)
    second.up("--expect-no-changes")
    assert second.outputs()["phase"] == 1


def test_backend_choice_env_url_beats_pulumi_yaml_which_beats_pulumi_login(
        tmp_path: Path, postgres: PostgresServer) -> None:
    """PULUMI_BACKEND_URL > Pulumi.yaml's `backend.url` > `pulumi login` (pkg/v3 workspace/creds.go)."""
    table = "choice_state"
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    (project / ".pulumi-state").mkdir()  # as scripts/setup.sh leaves it in a checkout
    pulumi = functools.partial(bare_pulumi, project, tmp_path / "home")

    def local(stack: str) -> bool:
        return (project / ".pulumi-state" / ".pulumi" / "stacks" / "aa-event-bus" / f"{stack}.json").exists()

    def shared(stack: str) -> bool:
        return keys(postgres, table, f"%/.pulumi/stacks/aa-event-bus/{stack}.json") != []

    # `pulumi login` to the shared backend is not enough inside this project: Pulumi.yaml wins.
    assert pulumi("login", postgres.url(table)).returncode == 0
    done = pulumi("stack", "init", "after-login")
    assert done.returncode == 0, done.stderr
    assert local("after-login") and not shared("after-login")
    # PULUMI_BACKEND_URL wins over Pulumi.yaml (the password from PGPASSWORD, not the URL).
    url = postgres.url(table).replace(f":{postgres.password}@", "@")
    done = pulumi("stack", "init", "from-env", PULUMI_BACKEND_URL=url, PGPASSWORD=postgres.password)
    assert done.returncode == 0, done.stderr
    assert shared("from-env") and not local("from-env")
    whoami = pulumi("whoami", "--verbose", PULUMI_BACKEND_URL=url, PGPASSWORD=postgres.password)
    assert f"Backend URL: {url}" in whoami.stdout and postgres.password not in whoami.stdout
