"""Real servers and the real Pulumi CLI for tests: no mocks here.

* `NatsServer`: a throwaway `nats-server -js` on a free loopback port with a
  temporary store; waits for "Server is ready", fails with the server's own
  fatal lines, terminates then kills.
* `NatsCluster`: three JetStream nodes on loopback routes, for replicas 3.
* `PulumiProject`: this repository's Pulumi program copied into a temporary
  directory (the virtualenv linked in), driven through the `pulumi` CLI with a
  temporary file backend and PULUMI_HOME, so the user's own login and state are
  never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
NATS_SERVER = VENV_BIN / "nats-server"
PASSPHRASE = "test-only-passphrase"
#: As in Pulumi.yaml's backend URL: no `.attrs` sidecars, whose non-atomic write a SIGKILL can leave empty.
FILE_BACKEND_QUERY = "?metadata=skip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def comm(pid: int) -> str:
    """Process `pid`'s name as `ps -o comm` shows it, or '' when it is gone."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def bare_pulumi(project: Path, home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`pulumi ARGS` in `project` as an operator's shell would run it, with none of this process's
    PULUMI_* or PG* variables (so Pulumi.yaml's backend applies unless `extra` names another),
    PULUMI_HOME `home`, and `extra` added to its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "PG"))}
    env.update(PULUMI_HOME=str(home), PULUMI_CONFIG_PASSPHRASE="test-only", PULUMI_SKIP_UPDATE_CHECK="true",
               PATH=f"{VENV_BIN}:{env.get('PATH', '')}", **extra)
    return subprocess.run(["pulumi", *args, "--non-interactive", "--cwd", str(project)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def marked_processes(marker: str) -> list[int]:
    """Pids of every process whose environment has EVENTBUS_TEST_MARKER=`marker` (a test sets it
    for the `pulumi` it starts, and every plugin and program of that command inherits it)."""
    found = []
    needle = f"EVENTBUS_TEST_MARKER={marker}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


class NatsServer:
    def __init__(self, workdir: Path, *, port: int | None = None, extra: list[str] | None = None,
                 name: str = "test") -> None:
        self.port = port or free_port()
        self.store = workdir / f"store-{name}"
        self.log = workdir / f"{name}.log"
        self.args = [str(NATS_SERVER), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                     "-sd", str(self.store), "-l", str(self.log), "-n", name, *(extra or [])]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, ready: str = "Server is ready", timeout: float = 20.0) -> NatsServer:
        self.store.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if ready in text:
                return self
            fatal = [line for line in text.splitlines() if "[FTL]" in line]
            if fatal or self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {' '.join(self.args)} failed: {' | '.join(fatal) or text[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"nats-server not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class NatsCluster:
    """Three JetStream nodes with routes on loopback; `url` lists all three."""

    def __init__(self, workdir: Path, name: str = "tc") -> None:
        cluster_ports = [free_port() for _ in range(3)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.nodes = [
            NatsServer(workdir, name=f"{name}-n{i}", extra=[
                "--cluster_name", name, "--cluster", f"nats://127.0.0.1:{cluster_ports[i]}", "--routes", routes,
            ])
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        # JetStream answers once the meta group has a leader.
        from components.jetstream.client import ConnectionSettings, JetStream

        js = JetStream(ConnectionSettings(servers=self.url))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                info = js.request("$JS.API.INFO", timeout=2)
                if info.get("type"):
                    return self
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
            time.sleep(0.5)
        raise RuntimeError(f"cluster has no JetStream meta leader after {timeout}s: {last}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class PulumiProject:
    """The repository's Pulumi program in a temporary directory, with its own backend."""

    workdir: Path
    stack: str = "test"
    config: dict[str, Any] = field(default_factory=dict)
    program: Path = ROOT
    namespace: str = "aa-event-bus"
    #: The state backend URL; None: a file backend of its own under workdir.
    backend: str | None = None
    #: False for a second checkout of a stack that already exists in `backend`.
    init_stack: bool = True

    def __post_init__(self) -> None:
        self.dir = self.workdir / "project"
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("Pulumi.yaml", "__main__.py"):
            shutil.copy(self.program / name, self.dir / name)
        if not (self.dir / ".venv").exists():
            (self.dir / ".venv").symlink_to(ROOT / ".venv")
        (self.workdir / "state").mkdir(exist_ok=True)
        (self.workdir / "home").mkdir(exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "PULUMI_BACKEND_URL": self.backend or f"file://{self.workdir / 'state'}{FILE_BACKEND_QUERY}",
            "PULUMI_HOME": str(self.workdir / "home"),
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
            # No resident (toolchain/langhost/program.py) outlives a test's command, unless the
            # test asks for one: hundreds of test directories would each keep one for its idle time.
            "EVENTBUS_RESIDENT": "0",
        }
        if self.init_stack:
            self.run("stack", "init", self.stack)
        for key, value in self.config.items():
            self.set(key, value)

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["pulumi", *args, "--non-interactive", "--cwd", str(self.dir)],
                              env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode:
            raise PulumiFailed(args, done)
        return done

    @property
    def stack_file(self) -> Path:
        return self.dir / f"Pulumi.{self.stack}.yaml"

    def set(self, key: str, value: Any, *, secret: bool = False) -> None:
        """Set one config key (project namespace implied). Secrets go through the CLI."""
        if secret:
            self.run("config", "set", "--stack", self.stack, "--secret", key, str(value))
            return
        data = yaml.safe_load(self.stack_file.read_text()) if self.stack_file.exists() else {}
        data = data or {}
        data.setdefault("config", {})[f"{self.namespace}:{key}"] = value
        self.stack_file.write_text(yaml.safe_dump(data))

    def unset(self, key: str) -> None:
        data = yaml.safe_load(self.stack_file.read_text()) or {}
        data.get("config", {}).pop(f"{self.namespace}:{key}", None)
        self.stack_file.write_text(yaml.safe_dump(data))

    def up(self, *extra: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run("up", "--yes", "--skip-preview", "--stack", self.stack, *extra, check=check, timeout=timeout)

    def preview(self, *extra: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run("preview", "--stack", self.stack, *extra, check=check, timeout=timeout)

    def preview_json(self, *extra: str) -> dict:
        done = self.preview("--json", *extra, check=False)
        return json.loads(done.stdout)

    def refresh(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("refresh", "--yes", "--stack", self.stack, *extra, check=check)

    def destroy(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("destroy", "--yes", "--stack", self.stack, check=check)

    def outputs(self) -> dict:
        return json.loads(self.run("stack", "output", "--json", "--stack", self.stack).stdout)

    def export(self) -> str:
        return self.run("stack", "export", "--stack", self.stack).stdout


def advance(js: Any, phase: int, stack: Any) -> Any:
    """Bring the server to `phase`'s topology by raw API, as phase_topology declares it.

    Streams that exist are updated first (releasing subjects), then new ones created,
    then missing durables created. Streams and durables outside the phase are left
    alone, as a move that keeps a backlog would. Returns the topology.
    """
    from components.migration.topology import phase_topology

    topo = phase_topology(stack.model_copy(update={"phase": phase}))
    existing = [s for s in topo.streams if js.stream_info(s.name) is not None]
    for spec in existing:
        js.stream_update(spec.wire())
    for spec in topo.streams:
        if spec not in existing:
            js.stream_create(spec.wire())
    for c in topo.consumers:
        if js.consumer_info(c.stream, c.durable_name) is None:
            js.consumer_upsert(c.stream, c.wire(), "create")
    return topo


class PulumiFailed(AssertionError):
    def __init__(self, args: tuple[str, ...], done: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"pulumi {' '.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-3000:]}")
        self.done = done
