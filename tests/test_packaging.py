"""`pip install .` gives a service the binding library with nats-py and pydantic only: a fresh virtualenv
(no system site-packages) gets the package from a copy of this checkout (`--no-deps`) and
requirements-binding.txt from the package registry, then runs a worker through `components.binding`
against a real nats-server. Pulumi is neither installed there nor imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.jetstream.client import ConnectionSettings, JetStream
from tests.harness import ROOT, NatsServer

pytestmark = pytest.mark.packaging

#: Run inside the fresh virtualenv: process the three messages on EVENTS through the binding's Worker.
WORKER = """
import json, os, sys, time
from components.binding import Worker
from components.jetstream.client import ConnectionSettings

seen = []
worker = Worker(ConnectionSettings(servers=os.environ["NATS_URL"]), "worker", ["MISSING", "EVENTS"],
                lambda msg: seen.append(msg.data.decode()))
worker.start()
deadline = time.monotonic() + 30
while worker.stats["acked"] < 3 and time.monotonic() < deadline:
    time.sleep(0.05)
worker.stop()
print(json.dumps({"seen": sorted(seen), "stats": worker.stats,
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                   check=True, timeout=600, capture_output=True)


@pytest.fixture(scope="module")
def binding_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with this package (`pip install --no-deps`) and requirements-binding.txt only."""
    base = tmp_path_factory.mktemp("packaging")
    # Build from a copy, so the build leaves nothing in the checkout.
    source = base / "src"
    shutil.copytree(ROOT / "components", source / "components", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "requirements-binding.txt"):
        shutil.copy2(ROOT / name, source / name)
    env = base / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    _pip(python, "--no-deps", str(source))
    _pip(python, "-r", str(source / "requirements-binding.txt"))
    return python


def test_binding_installed_without_pulumi_runs_a_worker_and_never_imports_pulumi(
        binding_venv: Path, tmp_path: Path) -> None:
    server = NatsServer(tmp_path).start()
    try:
        js = JetStream(ConnectionSettings(servers=server.url))
        js.stream_create({"name": "EVENTS", "subjects": ["events.>"], "storage": "memory", "num_replicas": 1})
        js.consumer_upsert("EVENTS", {"durable_name": "worker", "ack_policy": "explicit"}, "create")
        for n in range(3):
            js.publish(f"events.{n}", f"m{n}".encode())

        done = subprocess.run([str(binding_venv), "-c", WORKER], env={"NATS_URL": server.url, "PATH": ""},
                              capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["seen"] == ["m0", "m1", "m2"]
        assert result["stats"]["acked"] == 3
        info = js.consumer_info("EVENTS", "worker")
        assert info is not None and info["num_pending"] == 0 and info["num_ack_pending"] == 0
        assert not {"pulumi", "grpc", "deepdiff", "click", "yaml"} & set(result["modules"])

        probe = subprocess.run([str(binding_venv), "-c", "import pulumi"], capture_output=True, text=True,
                               timeout=60, check=False, cwd=tmp_path)
        assert probe.returncode == 1 and "No module named 'pulumi'" in probe.stderr
        installed = subprocess.run([str(binding_venv), "-m", "pip", "list", "--format=json"], capture_output=True,
                                   text=True, timeout=60, check=True)
        names = {p["name"].lower() for p in json.loads(installed.stdout)}
        assert {"aa-event-bus", "nats-py", "pydantic"} <= names
        assert not {"pulumi", "pulumi-command", "deepdiff", "click", "pyyaml"} & names
    finally:
        server.stop()
