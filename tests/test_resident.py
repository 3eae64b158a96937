"""The resident: a warm program (toolchain/langhost/program.py), once it has its imports, forks a
process that outlives the command, and the next command's language host has it fork that
command's warm program instead of starting one that imports everything again.

Through the real CLI on a fixture program that exports where it ran (its process name, the value
of a module it preloads, what reached its environment); the resident's refusals with real edits,
environments and sessions; and its socket protocol by hand for a host of another version.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import PASSPHRASE, ROOT, PulumiProject, comm, marked_processes
from tests.test_lifeline import alive
from tests.traffic import wait_until

PROGRAM = ROOT / "tests" / "fixtures" / "programs" / "resident"
RESIDENT, FORKED = "warm-resident", "warm-forked"


def residents(project: PulumiProject) -> list[int]:
    return [pid for pid in marked_processes(project.env["EVENTBUS_TEST_MARKER"]) if comm(pid) == RESIDENT]


def one_resident(project: PulumiProject) -> int:
    """The project's one resident, once any other process of its last command has gone."""
    marker = project.env["EVENTBUS_TEST_MARKER"]
    assert wait_until(lambda: len(residents(project)) == 1 and set(marked_processes(marker)) == set(residents(project)),
                      10), f"not one resident alone: {[(pid, comm(pid)) for pid in marked_processes(marker)]}"
    return residents(project)[0]


def listening_path(pid: int) -> str:
    """The socket path of resident `pid`: RESIDENT, the warm program's argument it was forked with
    (program.py: `--warm SOCKET FD ENGINE_PID MODULES PROGRAM_DIR RESIDENT SCRIPT`)."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().rstrip(b"\0").split(b"\0")[-2].decode()


def ran(project: PulumiProject, *extra: str) -> dict:
    """`pulumi up` (the program runs once), and the outputs it exported."""
    project.up(*extra)
    return project.outputs()


@pytest.fixture
def resident(tmp_path: Path) -> Iterator[PulumiProject]:
    project = PulumiProject(tmp_path, program=PROGRAM, namespace="resident")
    (project.dir / "resident_marker.py").write_text("VALUE = 1\n")
    project.env.update({"EVENTBUS_RESIDENT": "1", "EVENTBUS_TEST_MARKER": uuid.uuid4().hex})
    yield project
    marker = project.env["EVENTBUS_TEST_MARKER"]
    for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGTERM first: a resident then removes its socket
        for pid in marked_processes(marker):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        wait_until(lambda: not any(alive(pid) for pid in marked_processes(marker)), 3)


def test_the_next_command_runs_in_a_program_the_resident_forked_and_the_resident_holds_no_secret(
        resident: PulumiProject) -> None:
    resident.env.update({"PGPASSWORD": "pg-secret", "SERVICE_URL": "postgres://app:url-secret@db/x"})
    first = ran(resident)
    assert first["comm"] != FORKED and first["marker"] == 1
    pid = one_resident(resident)
    with open(f"/proc/{pid}/environ", "rb") as fh:
        environ = fh.read()
    for secret in (PASSPHRASE, "pg-secret", "url-secret", resident.env["PULUMI_BACKEND_URL"]):
        assert secret.encode() not in environ
    assert b"EVENTBUS_TEST_MARKER=" in environ
    assert oct(os.stat(listening_path(pid)).st_mode & 0o777) == oct(0o600)

    second = ran(resident)
    assert second == {**first, "comm": FORKED}
    # The engine's secrets come with the run, not from the resident.
    assert second["passphrase"] is True
    assert second["secretsSeen"] == ["PGPASSWORD", "PULUMI_BACKEND_URL", "SERVICE_URL"]
    assert one_resident(resident) == pid
    assert resident.preview("--expect-no-changes").returncode == 0
    assert one_resident(resident) == pid


def test_a_module_edited_since_the_resident_imported_it_is_imported_again(resident: PulumiProject) -> None:
    ran(resident)
    old = one_resident(resident)
    marker = resident.dir / "resident_marker.py"
    before = os.stat(marker)
    marker.write_text("VALUE = 2\n")  # the same size, and maybe the same mtime: the ctime differs
    os.utime(marker, ns=(before.st_atime_ns, before.st_mtime_ns))

    edited = ran(resident)
    assert edited["marker"] == 2 and edited["comm"] != FORKED
    new = one_resident(resident)
    assert new != old and not alive(old)
    assert ran(resident) == {**edited, "comm": FORKED}


def test_another_environment_is_refused_and_its_program_runs_with_its_own(resident: PulumiProject) -> None:
    ran(resident)
    old = one_resident(resident)
    resident.env["RESIDENT_PROBE"] = "probed"
    probed = ran(resident)
    assert probed["probe"] == "probed" and probed["comm"] != FORKED
    new = one_resident(resident)  # the refused command's warm program left a resident of its own
    assert new != old
    assert ran(resident)["comm"] == FORKED
    del resident.env["RESIDENT_PROBE"]
    assert ran(resident)["probe"] == ""


def test_a_command_in_another_session_is_refused(resident: PulumiProject) -> None:
    ran(resident)
    one_resident(resident)
    done = subprocess.run(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", resident.stack,
                           "--cwd", str(resident.dir)], env=resident.env, capture_output=True, text=True, timeout=300,
                          start_new_session=True, check=False)
    assert done.returncode == 0, done.stderr
    assert resident.outputs()["comm"] != FORKED


def test_a_killed_resident_leaves_its_socket_and_the_next_command_starts_another(resident: PulumiProject) -> None:
    ran(resident)
    old = one_resident(resident)
    path = listening_path(old)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not alive(old), 5)
    assert os.path.exists(path)
    assert ran(resident)["comm"] != FORKED
    new = one_resident(resident)
    assert listening_path(new) == path
    assert ran(resident)["comm"] == FORKED


def test_an_idle_resident_leaves_and_removes_its_socket(resident: PulumiProject) -> None:
    resident.env["EVENTBUS_RESIDENT_IDLE"] = "2"
    ran(resident)
    pid = one_resident(resident)
    path = listening_path(pid)
    assert path
    assert wait_until(lambda: not residents(resident), 10)
    assert not os.path.exists(path)


@pytest.mark.parametrize("setting", [{"EVENTBUS_RESIDENT": "0"}, {"CI": "true"}], ids=["off", "ci"])
def test_no_resident_when_turned_off_or_under_ci(resident: PulumiProject, setting: dict[str, str]) -> None:
    resident.env.pop("EVENTBUS_RESIDENT")
    resident.env.update(setting)
    assert ran(resident)["comm"] != FORKED
    marker = resident.env["EVENTBUS_TEST_MARKER"]
    assert wait_until(lambda: not marked_processes(marker), 10), "a process outlived its command"


def ask(path: str, request: dict) -> dict:
    """One request to the resident at `path`, with a listening socket of our own as the host's."""
    with tempfile.TemporaryDirectory() as tmp:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(tmp, "warm.sock"))
        listener.listen(1)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            body = json.dumps(request).encode()
            socket.send_fds(conn, [struct.pack(">I", len(body)) + body], [listener.fileno()])
            conn.settimeout(5)
            return json.loads(conn.makefile("rb").readline() or b"{}")
        finally:
            conn.close()
            listener.close()


def test_a_host_of_another_version_is_refused_and_the_resident_leaves(resident: PulumiProject) -> None:
    ran(resident)
    pid = one_resident(resident)
    path = listening_path(pid)
    assert ask(path, {"malformed": True}) == {"ok": False, "why": "malformed request"}
    assert residents(resident) == [pid]
    environ = {k: v for k, v in resident.env.items() if k not in ("PULUMI_CONFIG_PASSPHRASE",)}
    reply = ask(path, {"path": "/nonexistent", "engine": os.getpid(), "environ": environ,
                       "cwd": str(resident.dir), "script": "another"})
    assert reply == {"ok": False, "why": "another version of the language host"}
    assert wait_until(lambda: not residents(resident), 5)
    assert not os.path.exists(path)


def test_debug_logs_are_sent_only_to_an_engine_that_shows_them(tmp_path: Path) -> None:
    project = PulumiProject(tmp_path, program=PROGRAM, namespace="resident")
    (project.dir / "resident_marker.py").write_text("VALUE = 1\n")
    assert ran(project)["debugLogs"] == "0"
    shown = project.preview("--debug")
    assert "debug: registering resource: ty=pulumi:pulumi:Stack" in shown.stdout
    assert ran(project, "--debug")["debugLogs"] == ""
    assert ran(project, "-v=3")["debugLogs"] == ""
    project.env["PULUMI_OPTION_DEBUG"] = "true"
    assert ran(project)["debugLogs"] == ""


def test_a_resident_whose_project_directory_is_removed_leaves(resident: PulumiProject) -> None:
    ran(resident)
    pid = one_resident(resident)
    shutil.rmtree(resident.dir)
    assert wait_until(lambda: not alive(pid), 5)


def test_sigterm_ends_the_resident_and_removes_its_socket(resident: PulumiProject) -> None:
    ran(resident)
    pid = one_resident(resident)
    path = listening_path(pid)
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not alive(pid), 5)
    assert not os.path.exists(path)
    assert ran(resident)["comm"] != FORKED


@pytest.mark.parametrize("wrap", [["nice", "-n", "7"], ["sh", "-c", 'umask 077 && exec "$@"', "umask"]],
                         ids=["nice", "umask"])
def test_a_command_with_other_process_settings_is_refused(resident: PulumiProject, wrap: list[str]) -> None:
    ran(resident)
    old = one_resident(resident)
    done = subprocess.run([*wrap, "pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack",
                           resident.stack, "--cwd", str(resident.dir)], env=resident.env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    outputs = resident.outputs()
    assert outputs["comm"] != FORKED
    assert outputs["nice"] == (7 if wrap[0] == "nice" else 0)
    assert one_resident(resident) != old  # the refused command's warm program left its own


def test_a_module_that_changes_while_the_warm_program_imports_it_leaves_no_resident(
        resident: PulumiProject) -> None:
    # The module rewrites its own file as it is imported: an edit saved during the imports.
    marker = resident.dir / "resident_marker.py"
    marker.write_text("import pathlib\nVALUE = 1\npathlib.Path(__file__).write_text('VALUE = 2\\n')\n")
    assert ran(resident)["marker"] == 1
    marker_env = resident.env["EVENTBUS_TEST_MARKER"]
    assert wait_until(lambda: not marked_processes(marker_env), 10), "a resident kept what it cannot trust"
    second = ran(resident)  # the file as the module left it, imported again
    assert second["marker"] == 2 and second["comm"] != FORKED
    assert ran(resident) == {**second, "comm": FORKED}


def program_module() -> dict:
    """toolchain/langhost/program.py's functions, without running it."""
    text = (ROOT / "toolchain" / "langhost" / "program.py").read_text()
    namespace: dict = {"__name__": "eventbus_program"}
    exec(compile(text.replace("\n_main()\n", "\n"), "program.py", "exec"), namespace)  # noqa: S102 - the repo's file
    return namespace


@pytest.mark.parametrize(("name", "value", "withheld"), [
    ("PULUMI_CONFIG_PASSPHRASE", "x", True), ("PULUMI_BACKEND_URL", "file:///state", True),
    ("PGPASSWORD", "x", True), ("GITHUB_TOKEN", "x", True), ("AWS_SECRET_ACCESS_KEY", "x", True),
    ("AZURE_STORAGE_KEY", "x", True), ("NATS_CREDS", "x", True), ("DB_URL", "postgres://u:p@h:5432/db", True),
    ("HTTPS_PROXY", "http://user:pw@proxy:3128", True),
    ("PATH", "/usr/bin", False), ("NATS_URL", "nats://127.0.0.1:4222", False), ("HOME", "/root", False),
    ("EMAIL", "me@example.com", False), ("DOCS", "https://example.com/a@b", False),
])
def test_what_the_host_withholds(name: str, value: str, withheld: bool) -> None:
    assert program_module()["_withheld"](name, value) is withheld


def test_the_stamps_cover_installs_and_the_process_profile_its_inherited_settings() -> None:
    program = program_module()
    stamps = program["_module_stamps"]()
    site = next(p for p in sys.path if p.endswith("site-packages"))
    assert site in stamps and os.path.join(sys.prefix, "pyvenv.cfg") in stamps
    assert any(path.endswith(".pth") for path in stamps)
    assert all(stamp is None or len(stamp) == 4 for stamp in stamps.values())
    profile = program["_process_profile"](os.getpid())
    assert {"namespace net", "cgroup", "Umask", "nice", "hard limit Max open files"} <= set(profile)
    assert profile == program["_process_profile"](os.getpid())


def test_a_new_resident_removes_the_sockets_of_residents_that_were_killed(resident: PulumiProject) -> None:
    ran(resident)
    pid = one_resident(resident)
    path = listening_path(pid)
    prefix = path.rsplit("-", 1)[0]
    dead = f"{prefix}-{uuid.uuid4().hex[:16]}.sock"  # a killed resident's: bound, nobody listening
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(dead)
    listener.close()
    not_a_socket = f"{prefix}-{uuid.uuid4().hex[:16]}.sock"
    Path(not_a_socket).write_text("")
    try:
        os.kill(pid, signal.SIGKILL)  # its socket stays behind too
        assert wait_until(lambda: not alive(pid), 5) and os.path.exists(path)
        ran(resident)
        new = one_resident(resident)
        assert listening_path(new) == path and os.path.exists(path)
        assert not os.path.exists(dead)
        assert os.path.exists(not_a_socket)  # only sockets nobody listens on are removed
    finally:
        Path(not_a_socket).unlink(missing_ok=True)
        Path(dead).unlink(missing_ok=True)
