"""The language host's warm program (Pulumi.yaml's programPreload, toolchain/langhost).

For `pulumi preview` and `pulumi up`, the engine first asks a host About; that host starts
a program process that imports the programPreload modules while the engine is still busy,
and the host that then runs the program hands it the run. These tests run the real CLI on
a fixture program that tells, from inside, which process ran it and what it had imported.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import ROOT, PulumiProject

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


def marked(project: PulumiProject) -> list[int]:
    """Pids of every process whose environment carries this test's marker."""
    needle = f"EVENTBUS_TEST_MARKER={project.env['EVENTBUS_TEST_MARKER']}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def gone(project: PulumiProject, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not marked(project):
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


def test_a_preview_runs_warm_and_the_run_after_it_in_the_same_command_cold(preload: PulumiProject) -> None:
    # `pulumi up` with its preview runs the program twice, and asks About once: the preview
    # gets the warm process, the update starts the program as before.
    done = preload.run("up", "--yes", "--stack", preload.stack)
    assert done.stdout.count("program-preload: preloaded=True") >= 1
    assert preload.outputs()["preloaded"] is False
    assert preload.outputs()["configAtImport"] is True
    assert gone(preload, 10)


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
    import subprocess

    import yaml

    names = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]["programPreload"].split()
    code = f"import {', '.join(names)}; print('ok')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG")}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
