"""The language host's warm program (Pulumi.yaml's programPreload, toolchain/langhost).

For `pulumi preview` and `pulumi up`, the engine first asks a host About; that host starts
a program process that imports the programPreload modules while the engine is still busy,
and the host that then runs the program hands it the run. These tests run the real CLI on
a fixture program that tells, from inside, which process ran it and what it had imported.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import BinaryIO

import pytest
import yaml

from tests.harness import ROOT, PulumiProject, marked_processes

PROGRAM = ROOT / "tests" / "fixtures" / "programs" / "program_preload"

#: Imported by the warm process before the run, or by the program itself on a cold run.
MARKER = """
import os
PID = os.getpid()
CONFIG_AT_IMPORT = "PULUMI_CONFIG" in os.environ
"""


@pytest.fixture
def preload(tmp_path: Path) -> PulumiProject:
    project = PulumiProject(tmp_path, program=PROGRAM, namespace="program-preload",
                            config={"greeting": "hello"})
    (project.dir / "preload_marker_program.py").write_text(MARKER)
    project.set("token", "s3cret-value", secret=True)
    project.env["EVENTBUS_TEST_MARKER"] = uuid.uuid4().hex
    return project


def gone(project: PulumiProject, within: float) -> bool:
    """True once no process of this test's commands is left, within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not marked_processes(project.env["EVENTBUS_TEST_MARKER"]):
            return True
        time.sleep(0.1)
    return False


def test_up_runs_the_program_in_the_process_that_imported_its_preload_before_the_config_came(
        preload: PulumiProject) -> None:
    done = preload.up()
    out = preload.outputs()
    assert out["preloaded"] is True, "the program imported its preload module itself: it ran cold"
    assert out["sameProcess"] is True
    assert out["configAtImport"] is False, "the module was imported after the engine sent the config"
    assert out["greeting"] == "hello"  # the run's config reached the warm process
    assert "program-preload: preloaded=True" in done.stdout  # its standard output is the host's
    shown = preload.run("stack", "output", "--json", "--show-secrets", "--stack", preload.stack).stdout
    assert "s3cret-value" in shown  # secret config too
    assert "s3cret-value" not in preload.export()
    assert gone(preload, 10), "a process of the deploy outlived it"


def test_pulumi_up_runs_its_preview_and_then_its_update_warm(preload: PulumiProject) -> None:
    # `pulumi up` with its preview runs the program twice and asks About once: the preview gets
    # the warm process About started, and the host that ran the preview starts one for the update.
    done = preload.run("up", "--yes", "--stack", preload.stack)
    assert done.stdout.count("program-preload: preloaded=True") >= 2, done.stdout
    assert "preloaded=False" not in done.stdout
    assert preload.outputs()["preloaded"] is True
    assert preload.outputs()["configAtImport"] is False
    assert gone(preload, 10)


def test_a_preview_alone_leaves_no_warm_program_behind(preload: PulumiProject) -> None:
    done = preload.preview()
    assert "program-preload: preloaded=True" in done.stdout
    assert gone(preload, 5), "a warm program outlived the preview"


def test_eventbus_warm_0_starts_every_program_cold(preload: PulumiProject) -> None:
    preload.env["EVENTBUS_WARM"] = "0"
    preload.up()
    assert preload.outputs()["preloaded"] is False
    assert preload.outputs()["configAtImport"] is True


def test_a_failing_warm_program_fails_the_preview_with_its_own_error(preload: PulumiProject) -> None:
    preload.set("fail", True)
    done = preload.preview(check=False)
    assert done.returncode != 0
    assert "the test asked this program to fail" in done.stdout
    assert "program-preload: preloaded=True" in done.stdout
    assert gone(preload, 10)


def test_a_warm_program_killed_by_a_signal_fails_the_preview(preload: PulumiProject) -> None:
    preload.set("crash", True)
    done = preload.preview(check=False)
    assert done.returncode != 0
    assert "Program exited with non-zero exit code: -1" in done.stdout
    assert gone(preload, 10)


def test_a_warm_process_nobody_runs_ends_with_its_engine(preload: PulumiProject) -> None:
    # `pulumi about` asks About, as a preview does, and runs no program.
    preload.run("about", "--stack", preload.stack)
    assert gone(preload, 5), "the warm program outlived the command that started it"


def test_the_project_preloads_modules_that_import_and_read_no_config() -> None:
    # A misspelt name would only slow the program down, silently: the warm process ignores
    # what fails to import (the program reports it when it imports the module itself).

    names = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]["programPreload"].split()
    code = f"import {', '.join(names)}; print('ok')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG")}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- the warm program's hand-over, driven as the host drives it (toolchain/langhost/program.py) --

PROGRAM_PY = ROOT / "toolchain" / "langhost" / "program.py"

#: A stand-in for the SDK's exec script: prints what it got, and exits as it is told.
EXEC_SCRIPT = """
import os, sys, time
print("argv", sys.argv[1:], "config", os.environ.get("PULUMI_CONFIG"), flush=True)
if sys.argv[1:] == ["--sleep"]:
    time.sleep(30)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


class Warm:
    """A warm program process, started as the host starts one, for an `engine` pid; it preloads
    one module (json)."""

    def __init__(self, tmp: Path, engine: int, env: dict[str, str]) -> None:
        self.path = tmp / "warm.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # as the host listens, then hands it over
        listener.bind(str(self.path))
        listener.listen(1)
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "python"), "-u", "-c", PROGRAM_PY.read_text(), "--warm", str(self.path),
             str(listener.fileno()), str(engine), "json", str(tmp)],
            cwd=tmp, env=env, start_new_session=True, pass_fds=(listener.fileno(),))
        listener.close()

    def hand_over(self, env: dict[str, str], argv: list[str], cwd: Path,
                  config: str = '{"p:k": "v"}') -> tuple[dict, socket.socket, BinaryIO, int, int]:
        """Send the host's request: the answer, the connection and its reader, and the read ends
        of the standard output and error it handed over."""

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.path))
        body = json.dumps({"argv": argv, "set": {"PULUMI_CONFIG": config}, "environ": env, "cwd": str(cwd)}).encode()
        socket.send_fds(conn, [struct.pack(">I", len(body)) + body], [out_w, err_w])
        os.close(out_w)
        os.close(err_w)
        conn.settimeout(30)
        reader = conn.makefile("rb")
        return json.loads(reader.readline()), conn, reader, out_r, err_r

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


@pytest.fixture
def warm_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG")}


def test_a_warm_program_runs_the_exec_script_with_the_hosts_streams_and_config_and_reports_its_exit_code(
        tmp_path: Path, warm_env: dict[str, str]) -> None:
    script = tmp_path / "exec.py"
    script.write_text(EXEC_SCRIPT)
    warm = Warm(tmp_path, os.getpid(), {**warm_env, "EXIT_CODE": "7"})
    try:
        reply, _conn, reader, out_r, err_r = warm.hand_over({**warm_env, "EXIT_CODE": "7"}, [str(script), "--flag"],
                                                            tmp_path)
        assert reply == {"ok": True, "pid": warm.proc.pid}
        assert not warm.path.exists(), "the socket outlived the hand-over"
        assert reader.readline() == b'{"exit": 7}\n'

        assert read_all(out_r) == "argv ['--flag'] config {\"p:k\": \"v\"}\n"
        read_all(err_r)
        assert warm.proc.wait(10) == 7
    finally:
        warm.stop()


def test_a_warm_program_declines_a_host_whose_environment_differs_and_runs_nothing(
        tmp_path: Path, warm_env: dict[str, str]) -> None:
    script = tmp_path / "exec.py"
    script.write_text(EXEC_SCRIPT)
    warm = Warm(tmp_path, os.getpid(), warm_env)
    try:
        reply, _conn, _reader, out_r, err_r = warm.hand_over({**warm_env, "NATS_URL": "nats://elsewhere:4222"},
                                                             [str(script)], tmp_path)
        assert reply == {"ok": False, "why": "environment differs: NATS_URL"}
        assert warm.proc.wait(10) == 0
        assert read_all(out_r) == ""  # the exec script never ran
        read_all(err_r)
    finally:
        warm.stop()


def test_a_warm_program_declines_a_host_in_another_working_directory(
        tmp_path: Path, warm_env: dict[str, str]) -> None:
    warm = Warm(tmp_path, os.getpid(), warm_env)
    try:
        reply, _conn, _reader, out_r, err_r = warm.hand_over(warm_env, [str(tmp_path / "exec.py")], tmp_path.parent)
        assert reply == {"ok": False, "why": "working directory differs"}
        assert warm.proc.wait(10) == 0
        read_all(out_r)
        read_all(err_r)
    finally:
        warm.stop()


def test_a_warm_program_ends_when_the_host_running_it_is_gone(tmp_path: Path, warm_env: dict[str, str]) -> None:
    script = tmp_path / "exec.py"
    script.write_text(EXEC_SCRIPT)
    warm = Warm(tmp_path, os.getpid(), warm_env)
    try:
        reply, conn, reader, out_r, err_r = warm.hand_over(warm_env, [str(script), "--sleep"], tmp_path)
        assert reply["ok"] is True
        out = os.fdopen(out_r, "rb")
        # Running, for 30 s (a line: unbuffered, print writes it in pieces).
        assert out.readline().startswith(b"argv ['--sleep']")
        reader.close()
        conn.close()  # the host's end, as when the host is gone
        assert warm.proc.wait(5) == 1
        out.read()
        out.close()
        read_all(err_r)
    finally:
        warm.stop()


def test_an_unused_warm_program_ends_with_its_engine_and_removes_its_socket(
        tmp_path: Path, warm_env: dict[str, str]) -> None:
    engine = subprocess.Popen(["sleep", "60"])
    warm = Warm(tmp_path, engine.pid, warm_env)
    try:
        time.sleep(0.5)
        assert warm.proc.poll() is None, "the warm program left while its engine was there"
        engine.kill()
        engine.wait()
        assert warm.proc.wait(5) == 0
        assert not warm.path.exists()
    finally:
        engine.kill()
        warm.stop()
