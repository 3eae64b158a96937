"""The provider zygote: the warm program (toolchain/langhost/program.py) forks, once it has its
imports, a process that forks the dynamic provider the engine starts, and the provider shim
(toolchain/provider.py) hands it the engine's request and stays as the engine's plugin process.

Through the real CLI, on a fixture program whose provider notes where it runs; and with the real
shim under a stand-in engine, beside a warm program started as the host starts one, for the
lifeline: the engine's SIGINT with a stream write in flight, and the engine SIGKILLed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.pulumi import lifeline
from tests.harness import ROOT, VENV_BIN, PulumiProject, comm, marked_processes
from tests.test_lifeline import HOLD_WRITE_LOCK, LEAVES_AFTER_THE_WRITE, alive, processes
from tests.traffic import wait_until

PROGRAM = ROOT / "tests" / "fixtures" / "programs" / "provider_fork"
PROVIDER_PY = ROOT / "toolchain" / "provider.py"
PROGRAM_PY = ROOT / "toolchain" / "langhost" / "program.py"


def provider_module() -> dict:
    """toolchain/provider.py's functions, as the zygote loads them."""
    namespace = {"__name__": "eventbus_provider", "__file__": str(PROVIDER_PY)}
    exec(compile(PROVIDER_PY.read_text(), str(PROVIDER_PY), "exec"), namespace)  # noqa: S102 - the repo's file
    return namespace


@pytest.fixture
def noting(tmp_path: Path) -> PulumiProject:
    project = PulumiProject(tmp_path, program=PROGRAM, namespace="provider-fork")
    (project.dir / "provider_fork_marker.py").write_text("")
    project.env["NOTES"] = str(tmp_path / "notes")
    project.env["EVENTBUS_TEST_MARKER"] = uuid.uuid4().hex
    # A secret the language host withholds from the warm program, so from the zygote: its
    # absence there is no difference that makes the zygote refuse.
    project.env["PGPASSWORD"] = "withheld-from-the-zygote"
    return project


def notes(project: PulumiProject) -> list[dict]:
    path = Path(project.env["NOTES"])
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


def test_up_and_preview_run_a_provider_forked_with_the_programs_imports_and_leave_nothing(
        noting: PulumiProject) -> None:
    noting.up()
    created = notes(noting)
    noting.preview("--expect-no-changes")
    previewed = notes(noting)
    assert created and previewed
    for note in created + previewed:
        assert note == {"pid": note["pid"], "comm": "provider-forked", "marker": True}
    assert wait_until(lambda: not marked_processes(noting.env["EVENTBUS_TEST_MARKER"]), 5), \
        "a zygote or provider outlived its command"


def test_eventbus_provider_fork_0_starts_the_provider_in_its_shim(noting: PulumiProject) -> None:
    noting.env["EVENTBUS_PROVIDER_FORK"] = "0"
    noting.up()
    created = notes(noting)
    assert created
    assert all(note["comm"] != "provider-forked" and note["marker"] is False for note in created)


#: Imports the modules given as arguments, then prints what a fork of this process would copy
#: half-working: other threads, and open sockets.
FORK_STATE = """
import importlib, json, os, sys, threading
for name in sys.argv[1:]:
    importlib.import_module(name)
links = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")]
print(json.dumps({"threads": threading.active_count(), "sockets": [link for link in links if link.startswith("socket:")]}))
"""


@pytest.mark.parametrize("program", [ROOT, ROOT / "benchmarks" / "scale_program", PROGRAM],
                         ids=["project", "scale_program", "provider_fork"])
def test_what_the_program_preloads_leaves_nothing_that_a_fork_would_break(program: Path, tmp_path: Path) -> None:
    names = yaml.safe_load((program / "Pulumi.yaml").read_text())["runtime"]["options"]["programPreload"].split()
    (tmp_path / "provider_fork_marker.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG")}
    env["PYTHONPATH"] = f"{tmp_path}:{ROOT}"
    done = subprocess.run([str(VENV_BIN / "python"), "-c", FORK_STATE, *names], capture_output=True, text=True,
                          timeout=60, check=True, cwd=ROOT, env=env)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"threads": 1, "sockets": []}


def test_the_environment_may_differ_only_in_the_engines_and_hosts_own_variables() -> None:
    differs = provider_module()["environment_differs"]
    ours = {"PATH": "/bin", "PULUMI_HOME": "/h", "EVENTBUS_PYTHON": "/p"}
    assert differs(ours, {"PATH": "/bin", "PULUMI_RUNTIME_VIRTUALENV": ".venv"}) == []
    assert differs(ours, {"PATH": "/bin", "PYTHONPATH": "/elsewhere"}) == ["PYTHONPATH"]
    assert differs(ours, {"PATH": "/usr/bin", "NATS_URL": "nats://x"}) == ["NATS_URL", "PATH"]
    # A shell's own bookkeeping (bash as /bin/sh counts SHLVL, sets _): the working directory is compared apart.
    assert differs({**ours, "SHLVL": "1"}, {"PATH": "/bin", "SHLVL": "2", "_": "/usr/bin/python", "PWD": "/x"}) == []


SENT = [
    {"argv": ["127.0.0.1:1", "--x"], "environ": {"A": "plain", "B": 'quote " backslash \\ tab \t nl \n'},
     "cwd": "/tmp/dir", "script": "/p.py", "pgid": 1234},
    {"environ": {"U": "ünïcödé ✓ \U0001F600", "S": "bytes\udcff\udc80 kept", "E": ""}, "argv": [], "pgid": 0},
]


@pytest.mark.parametrize("value", SENT, ids=["escapes", "unicode-and-undecodable"])
def test_what_the_shim_sends_is_the_json_json_dumps_writes(value: dict) -> None:
    text = provider_module()["json_text"](value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert json.loads(text) == value


@pytest.mark.parametrize("line", [
    b'{"ok": true, "pid": 4321}\n', b'{"ok": false, "why": "environment differs: A, \\"B\\" \\u00e9"}\n',
    b'{"exit": -1}', b'{"exit": 0, "note": null}\r\n', b"{}\n", b' { "a" : "x" , "b" : 12 } ',
])
def test_the_shims_reader_of_the_zygotes_lines_reads_what_json_loads_reads(line: bytes) -> None:
    assert provider_module()["json_object"](line) == json.loads(line)


@pytest.mark.parametrize("line", [b"", b"[1]\n", b'{"a": 1.5}', b'{"a": [1]}', b'{"a": 1', b'{"a": 1} x', b'{a: 1}'])
def test_the_shims_reader_refuses_what_it_does_not_read(line: bytes) -> None:
    with pytest.raises(ValueError):
        provider_module()["json_object"](line)


#: The shim's way to a zygote, in a fresh interpreter without site as the shim runs: prints the
#: reason the zygote gave, then which of the slow-to-import packages it imported.
LEAN_SHIM = """
import sys
path = sys.argv.pop(1)
namespace = {"__name__": "eventbus_provider", "__file__": path}
exec(compile(open(path).read(), path, "exec"), namespace)
print(namespace["hand_to_zygote"](["127.0.0.1:1"], path))
heavy = ("json", "re", "enum", "socket", "signal", "hashlib", "threading", "tempfile", "site")
print(" ".join(name for name in heavy if name in sys.modules))
"""


def test_the_shims_way_to_the_zygote_imports_only_what_is_built_into_the_interpreter(tmp_path: Path) -> None:
    # The shim's engine is its parent's parent: here, this test process's parent.
    path = provider_module()["zygote_path"](os.getppid(), sys.prefix, str(tmp_path))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        shim = subprocess.Popen([str(VENV_BIN / "python"), "-S", "-u", "-c", LEAN_SHIM, str(PROVIDER_PY)],
                                cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        listener.settimeout(10)
        conn, _ = listener.accept()
        with conn:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            for fd in fds:
                os.close(fd)
            length = struct.unpack(">I", data[:4])[0]
            while len(data) - 4 < length:
                data += conn.recv(1 << 16)
            request = json.loads(data[4:])
            conn.sendall(b'{"ok": false, "why": "refused \\u2713"}\n')
        out, _ = shim.communicate(timeout=10)
    finally:
        listener.close()
        os.unlink(path)
    assert request["argv"] == ["127.0.0.1:1"] and request["cwd"] == str(tmp_path) and len(fds) == 3
    assert os.path.realpath(request["script"]) == str(PROVIDER_PY)
    assert request["environ"]["PATH"] == os.environ["PATH"]
    assert out.splitlines() == ["refused \u2713", ""]


# -- the shim and the zygote under a stand-in engine ----------------------------------------------

#: A stand-in engine: once the file GO names exists, starts the provider shim as the engine does
#: (its own process group in the engine's session, the engine's address as argument), tells the
#: shim's pid, and stays.
ENGINE = """
import subprocess, sys, time
from pathlib import Path
go, deadline = Path(sys.argv[2]), time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.02)
shim = subprocess.Popen([sys.argv[1], "127.0.0.1:1"], process_group=0)
print(shim.pid, flush=True)
time.sleep(60)
"""


class Stage:
    """A stand-in engine, a warm program for it (as the language host starts one, with the
    zygote on), and the provider shim the engine starts; the shim's provider preloads
    HOLD_WRITE_LOCK, which holds the stream write lock until the file `release` exists."""

    def __init__(self, tmp: Path, shim_env: dict[str, str] | None = None, *, start_shim: bool = True) -> None:
        self.tmp = tmp
        (tmp / "hold_write_lock.py").write_text(HOLD_WRITE_LOCK)
        self.held, self.release, go = tmp / "held", tmp / "release", tmp / "go"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "EVENTBUS_"))}
        env.update({"HELD": str(self.held), "RELEASE": str(self.release), "PYTHONPATH": f"{tmp}:{ROOT}",
                    "PWD": str(tmp),  # as the shim's shell sets it
                    "PULUMI_RUNTIME_PROVIDERPRELOAD": "hold_write_lock"})
        self.env = {**env, **(shim_env or {})}
        (tmp / "engine.py").write_text(ENGINE)
        self.engine = subprocess.Popen([sys.executable, str(tmp / "engine.py"),
                                        str(VENV_BIN / "pulumi-resource-pulumi-python"), str(go)],
                                       cwd=tmp, env={**env, **(shim_env or {})}, stdout=subprocess.PIPE, text=True)
        self.socket = Path(provider_module()["zygote_path"](self.engine.pid, str(ROOT / ".venv"), str(tmp)))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the host's socket for the warm program
        listener.bind(str(tmp / "warm.sock"))
        listener.listen(1)
        self.warm = subprocess.Popen(
            [str(VENV_BIN / "python"), "-u", "-c", PROGRAM_PY.read_text(), "--warm", str(tmp / "warm.sock"),
             str(listener.fileno()), str(self.engine.pid), "json", str(tmp)],
            cwd=tmp, env={**env, "EVENTBUS_PROVIDER_SCRIPT": str(PROVIDER_PY)}, process_group=0,
            pass_fds=(listener.fileno(),))
        listener.close()
        self.zygote = 0
        self.shim = 0
        assert wait_until(self._find_zygote, 10), "the warm program forked no zygote"
        if not start_shim:
            return
        go.touch()
        assert self.engine.stdout is not None
        self.shim = int(self.engine.stdout.readline())
        self.port = self.engine.stdout.readline().strip()

    def _find_zygote(self) -> bool:
        found = [pid for pid in processes() if lifeline.parent_of(pid) == self.warm.pid and comm(pid) == "provider-zygote"]
        self.zygote = found[0] if found else 0
        return bool(found)

    def forked(self) -> list[int]:
        return [pid for pid in processes() if lifeline.parent_of(pid) == self.zygote and comm(pid) == "provider-forked"]

    def hand(self, env: dict[str, str] | None = None, body: bytes | None = None) -> tuple[socket.socket, int]:
        """Connect to the zygote as a shim does, with /dev/null as standard input and the write end
        of a pipe as standard output and error: the connection, and the pipe's read end."""
        read_end, write_end = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.socket))
        if body is None:
            body = json.dumps({"argv": ["127.0.0.1:1"], "environ": env or self.env, "cwd": str(self.tmp),
                               "script": str(PROVIDER_PY), "pgid": os.getpgid(0)}).encode()
        socket.send_fds(conn, [struct.pack(">I", len(body)) + body], [null, write_end, write_end])
        os.close(write_end)
        os.close(null)
        conn.settimeout(10)
        return conn, read_end

    def close(self) -> None:
        self.release.touch()
        self.engine.kill()
        self.engine.wait(10)
        wait_until(lambda: not alive(self.zygote), 3)  # it leaves with its engine, and removes its socket
        self.warm.kill()
        self.warm.wait(10)
        for pid in [self.shim, self.zygote, *self.forked()]:
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


def read_to_end(fd: int, within: float) -> bytes | None:
    """What the pipe's read end `fd` gives until every writer has closed it, or None when one still
    holds it open after `within` seconds. Closes `fd`."""
    data = b""
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return data
                data += chunk
        return None
    finally:
        os.close(fd)


def test_the_engines_sigint_reaches_the_forked_provider_which_leaves_after_the_write_in_flight(
        tmp_path: Path) -> None:
    stage = Stage(tmp_path)
    try:
        assert stage.port.isdigit(), "the forked provider did not print its port on the shim's stdout"
        provider = stage.forked()
        assert len(provider) == 1, "the zygote forked no provider"
        assert wait_until(stage.held.exists, 10), "the provider did not preload its modules"
        assert os.getpgid(provider[0]) == stage.shim, "the provider is not in the group the engine signals"
        os.killpg(stage.shim, signal.SIGINT)  # how the engine stops its plugins after every command
        assert not wait_until(lambda: not alive(provider[0]), 0.5), "the provider left with a write in flight"
        assert alive(stage.shim), "the shim left before its provider"
        stage.release.touch()
        assert wait_until(lambda: not alive(provider[0]) and not alive(stage.shim), LEAVES_AFTER_THE_WRITE)
        assert stage.engine.poll() is None
        assert alive(stage.zygote), "the zygote left while its engine is there"
    finally:
        stage.close()


def test_a_sigkilled_engine_ends_the_shim_the_forked_provider_after_its_write_and_the_zygote(
        tmp_path: Path) -> None:
    stage = Stage(tmp_path)
    try:
        provider = stage.forked()
        assert len(provider) == 1
        assert wait_until(stage.held.exists, 10)
        stage.engine.kill()
        stage.engine.wait(10)
        assert wait_until(lambda: not alive(stage.shim), 5), "the shim outlived its engine"
        assert wait_until(lambda: not alive(stage.zygote), 5), "the zygote outlived its engine"
        assert not stage.socket.exists(), "the zygote left its socket"
        assert alive(provider[0]), "the provider left with a write in flight"
        stage.release.touch()
        assert wait_until(lambda: not alive(provider[0]), LEAVES_AFTER_THE_WRITE), "the provider outlived its engine"
    finally:
        stage.close()


def test_a_shim_whose_environment_differs_is_refused_and_serves_the_provider_itself(tmp_path: Path) -> None:
    stage = Stage(tmp_path, shim_env={"NATS_URL": "nats://elsewhere:4222"})
    try:
        assert stage.port.isdigit()
        assert stage.forked() == []
        assert wait_until(stage.held.exists, 10), "the shim's own provider did not preload its modules"
        assert alive(stage.zygote)
    finally:
        stage.close()


@pytest.fixture
def shimless(tmp_path: Path) -> Iterator[Stage]:
    """A Stage whose engine starts no shim: the test talks to the zygote as a shim would."""
    stage = Stage(tmp_path, start_shim=False)
    try:
        yield stage
    finally:
        stage.close()


def test_a_provider_forked_for_a_shim_that_gave_up_leaves_without_a_word_and_closes_its_streams(
        shimless: Stage) -> None:
    conn, output = shimless.hand()
    conn.close()  # gave up waiting (the shim's ZYGOTE_REPLY_TIMEOUT), before the answer
    assert read_to_end(output, 5) == b"", "something still holds the streams the engine reads"
    assert wait_until(lambda: not shimless.forked(), 5)
    assert alive(shimless.zygote)


def test_a_refused_shim_that_has_gone_gets_its_streams_closed(shimless: Stage) -> None:
    conn, output = shimless.hand(env={**shimless.env, "NATS_URL": "nats://elsewhere:4222"})
    conn.close()
    assert read_to_end(output, 5) == b""
    assert alive(shimless.zygote)


def test_a_malformed_request_leaves_the_zygote_serving_the_next_shim(shimless: Stage) -> None:
    conn, output = shimless.hand(body=b"[1, 2]")
    assert conn.recv(1 << 10) == b"", "a request that is not a JSON object was answered"
    conn.close()
    assert read_to_end(output, 5) == b""

    conn, output = shimless.hand()
    reply = json.loads(conn.makefile("rb").readline())
    assert reply["ok"] is True and shimless.forked() == [reply["pid"]]
    conn.sendall(b"go\n")
    assert select.select([output], [], [], 10)[0], "the forked provider printed no port"
    assert os.read(output, 64).strip().isdigit()
    shimless.release.touch()
    conn.close()  # the shim gone: the provider leaves, closing the streams it printed its port on
    assert read_to_end(output, LEAVES_AFTER_THE_WRITE) == b""
