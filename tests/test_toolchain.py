"""The toolchain that set-up installs: versions line up and nothing reaches for the network.

scripts/toolchain.sh has two paths, both tested here: an installed `pulumi` on PATH
that fits the pinned SDK (laid out in a temporary directory as Pulumi's installers do:
this machine's CLI with a Python language host and the dynamic-provider plugin beside
it), and the build from Go modules (its per-version cache pre-filled from this
machine's CLI, so no test pays for a cold build).
"""

from __future__ import annotations

import collections
import json
import os
import platform
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from tests.harness import FILE_BACKEND_QUERY, ROOT, VENV_BIN, PulumiProject, bare_pulumi

PIN = version("pulumi")
TOOLCHAIN = ROOT / "scripts" / "toolchain.sh"
#: What toolchain.sh needs besides the directories a test puts first: no other pulumi.
BASE_PATH = "/usr/bin:/bin"


def _real_pulumi() -> Path:
    """The CLI set-up installed (either path), and the directory its plugins sit in."""
    return (VENV_BIN / "pulumi").resolve()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def installed_layout(where: Path) -> Path:
    """A Pulumi install as its installers lay it out: pulumi, pulumi-language-python and the
    dynamic-provider plugin in one directory. The language host is this project's adaptor
    (the official one cannot be had here), the same binary the build path runs; it notes
    each start in host.log."""
    where.mkdir(parents=True, exist_ok=True)
    home = _real_pulumi().parent
    for name in ("pulumi", "pulumi-language-python-exec", "pulumi-resource-pulumi-python"):
        _link_or_copy((home / name).resolve(), where / name)
    host = where / "pulumi-language-python"
    host.write_text(
        "#!/bin/sh\n"
        f'echo started >> "{where}/host.log"\n'
        f'PULUMI_LANGUAGE_PYTHON_EXEC="{where}/pulumi-language-python-exec" EVENTBUS_PYTHON="{VENV_BIN}/python" '
        f'exec "{_built_host()}" "$@"\n'
    )
    host.chmod(0o755)
    return where


def _built_host() -> Path:
    """The Go language host the set-up built (the build path's wrapper names it)."""
    wrapper = (VENV_BIN / "pulumi-language-python").read_text()
    return Path(wrapper.split(" exec ", 1)[1].split('"')[1])


def build_cache(where: Path) -> Path:
    """A JSM_CACHE_DIR whose build of the pinned version is already there."""
    built = where / f"pulumi-v{PIN}"
    built.mkdir(parents=True)
    home = _real_pulumi().parent
    for name in ("pulumi", "pulumi-language-python-exec", "pulumi-resource-pulumi-python"):
        _link_or_copy((home / name).resolve(), built / name)
    host = _built_host()
    (built / host.parent.name).mkdir()
    _link_or_copy(host, built / host.parent.name / host.name)
    return where


def fake_pulumi(where: Path, says: str) -> Path:
    """A `pulumi` whose `version` prints `says`."""
    where.mkdir(parents=True, exist_ok=True)
    script = where / "pulumi"
    script.write_text(f"#!/bin/sh\necho {says}\n")
    script.chmod(0o755)
    return where


def toolchain(tmp_path: Path, *first: Path, mode: str | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run toolchain.sh into a fresh BINDIR with `first` before BASE_PATH on PATH."""
    bindir = tmp_path / "bin"
    env = {k: v for k, v in os.environ.items() if k != "JSM_PULUMI"}
    env.update(PATH=":".join([*map(str, first), BASE_PATH]), JSM_CACHE_DIR=str(build_cache(tmp_path / "cache")))
    if mode is not None:
        env["JSM_PULUMI"] = mode
    done = subprocess.run(["bash", str(TOOLCHAIN), str(bindir)], capture_output=True, text=True, env=env, check=False)
    return done, bindir


def test_pulumi_cli_version_equals_v_plus_the_installed_sdk_version() -> None:
    out = subprocess.run([str(VENV_BIN / "pulumi"), "version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"v{version('pulumi')}"


def test_pulumi_and_its_bundled_plugins_sit_together_beside_the_resolved_cli() -> None:
    # The engine looks for them beside its own resolved executable: a hard link to the
    # build, or a symlink to an installed CLI whose directory holds them.
    home = _real_pulumi().parent
    for name in ("pulumi-language-python", "pulumi-resource-pulumi-python"):
        path = home / name
        assert path.exists() and path.stat().st_mode & 0o111, f"{name} missing or not executable in {home}"
    kind = (VENV_BIN / ".pulumi-toolchain").read_text().split()[0]
    assert kind == ("installed" if (VENV_BIN / "pulumi").is_symlink() else "build")


def test_nats_server_from_the_wheel_is_2_15() -> None:
    out = subprocess.run([str(VENV_BIN / "nats-server"), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("nats-server: v2.15.")


def test_activation_turns_off_update_checks_and_plugin_downloads() -> None:
    activate = (VENV_BIN / "activate").read_text()
    for setting in ("PULUMI_SKIP_UPDATE_CHECK=true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"):
        assert f"export {setting}" in activate


def test_project_backend_is_a_local_file_backend_without_sidecars() -> None:
    assert f"url: file://./.pulumi-state{FILE_BACKEND_QUERY}\n" in (ROOT / "Pulumi.yaml").read_text()


def test_an_empty_state_sidecar_breaks_every_load_and_the_project_backend_writes_none(tmp_path: Path) -> None:
    """A SIGKILLed `pulumi up` once left `<stack>.json.attrs` empty (the file backend truncates, then
    writes it, unlike the state file, which it renames into place): every later command failed with
    "failed to load checkpoint: EOF". With Pulumi.yaml's `?metadata=skip` no sidecar is written."""
    project = tmp_path / "project"
    (project / ".pulumi-state").mkdir(parents=True)
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    stacks = project / ".pulumi-state" / ".pulumi" / "stacks" / "aa-event-bus"

    # The file backend's default: a sidecar per state file. Empty, as the kill left it, it breaks the load.
    default = {"PULUMI_BACKEND_URL": f"file://{project / '.pulumi-state'}"}
    assert bare_pulumi(project, tmp_path / "home", "stack", "init", "with-sidecars", **default).returncode == 0
    sidecar = stacks / "with-sidecars.json.attrs"
    assert sidecar.exists()
    sidecar.write_bytes(b"")
    broken = bare_pulumi(project, tmp_path / "home", "stack", "export", "--stack", "with-sidecars", **default)
    assert broken.returncode != 0 and "failed to load checkpoint: EOF" in broken.stderr

    # Pulumi.yaml's URL: the stack's state is written and read back, and no sidecar is ever written.
    assert bare_pulumi(project, tmp_path / "home", "stack", "init", "plain").returncode == 0
    assert bare_pulumi(project, tmp_path / "home", "config", "set", "phase", "1", "--stack", "plain").returncode == 0
    exported = bare_pulumi(project, tmp_path / "home", "stack", "export", "--stack", "plain")
    assert exported.returncode == 0, exported.stderr
    assert (stacks / "plain.json").exists() and not (stacks / "plain.json.attrs").exists()


def test_setup_removes_state_sidecars_left_before_metadata_skip() -> None:
    planted = ROOT / ".pulumi-state" / ".pulumi" / "stacks" / f"sidecar-test-{os.getpid()}"
    planted.mkdir(parents=True)
    try:
        (planted / "s.json").write_text("{}")
        (planted / "s.json.attrs").write_bytes(b"")  # as a killed write leaves it
        subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True, check=True)
        assert not (planted / "s.json.attrs").exists()
        assert (planted / "s.json").read_text() == "{}"
    finally:
        shutil.rmtree(planted)


def test_setup_run_again_is_quick_and_changes_nothing() -> None:
    before = (VENV_BIN / "pulumi").stat().st_ino
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True, check=True)
    assert "installing" not in done.stderr and "building" not in done.stderr
    assert (VENV_BIN / "pulumi").stat().st_ino == before


def test_committed_stack_files_parse_staging_one_replica_production_three() -> None:
    import yaml

    from components.cli.diagnostics import stack_values
    from components.spec.stack import parse_stack_config

    def load(stack: str):
        path = ROOT / f"Pulumi.{stack}.yaml"
        return parse_stack_config(stack_values(yaml.safe_load(path.read_text()), str(path)))

    staging, production = load("staging"), load("production")
    assert (staging.replicas, production.replicas) == (1, 3)
    assert staging.nats_url == "nats://127.0.0.1:4223"
    assert len(production.nats_url.split(",")) == 3


# -- the two paths of scripts/toolchain.sh ------------------------------------------------
def test_toolchain_installed_cli_that_fits_is_used_and_named(tmp_path: Path) -> None:
    installed = installed_layout(tmp_path / "installed")
    done, bindir = toolchain(tmp_path, installed)
    assert done.returncode == 0, done.stderr
    assert f"using the installed pulumi v{PIN} at {installed / 'pulumi'}" in done.stderr
    assert (bindir / "pulumi").resolve() == (installed / "pulumi").resolve()
    assert not (bindir / "pulumi-language-python").exists(), "the installed CLI brings its own language host"
    assert (bindir / ".pulumi-toolchain").read_text().split()[:2] == ["installed", f"v{PIN}"]


def test_toolchain_installed_cli_older_than_the_pin_is_passed_over_for_the_build(tmp_path: Path) -> None:
    old = fake_pulumi(tmp_path / "old", "v3.100.0")
    done, bindir = toolchain(tmp_path, old)
    assert done.returncode == 0, done.stderr
    assert f"not using {old / 'pulumi'}: version 'v3.100.0' does not fit the pinned SDK" in done.stderr
    assert f"using pulumi v{PIN} built from Go modules" in done.stderr
    assert not (bindir / "pulumi").is_symlink()
    assert subprocess.run([str(bindir / "pulumi"), "version"], capture_output=True, text=True,
                          check=True).stdout.strip() == f"v{PIN}"


def test_toolchain_installed_cli_of_another_major_version_is_passed_over(tmp_path: Path) -> None:
    other = fake_pulumi(tmp_path / "v4", "v4.0.0")
    done, _ = toolchain(tmp_path, other, mode="installed")
    assert done.returncode == 1
    assert "version 'v4.0.0' does not fit the pinned SDK (needs v3" in done.stderr


def test_toolchain_installed_cli_without_a_language_host_beside_it_is_passed_over(tmp_path: Path) -> None:
    installed = installed_layout(tmp_path / "installed")
    (installed / "pulumi-language-python").unlink()
    done, bindir = toolchain(tmp_path, installed)
    assert done.returncode == 0, done.stderr
    assert "missing next to it: pulumi-language-python" in done.stderr
    assert "built from Go modules" in done.stderr and not (bindir / "pulumi").is_symlink()


def test_toolchain_override_build_ignores_a_fitting_installed_cli(tmp_path: Path) -> None:
    done, bindir = toolchain(tmp_path, installed_layout(tmp_path / "installed"), mode="build")
    assert done.returncode == 0, done.stderr
    assert "built from Go modules" in done.stderr and "using the installed" not in done.stderr
    assert not (bindir / "pulumi").is_symlink()
    assert (bindir / "pulumi-language-python").exists()


def test_toolchain_override_installed_without_a_fitting_cli_fails_naming_the_fix(tmp_path: Path) -> None:
    done, bindir = toolchain(tmp_path, fake_pulumi(tmp_path / "old", "v3.100.0"), mode="installed")
    assert done.returncode == 1
    assert "JSM_PULUMI=installed, but no pulumi on PATH fits" in done.stderr
    assert "unset JSM_PULUMI to build it" in done.stderr
    assert not (bindir / "pulumi").exists()


def test_toolchain_override_unknown_value_fails_naming_the_allowed_ones(tmp_path: Path) -> None:
    done, _ = toolchain(tmp_path, mode="download")
    assert done.returncode == 1
    assert "JSM_PULUMI must be auto, installed or build (got 'download')" in done.stderr


@pytest.mark.pulumi
def test_pulumi_up_through_an_installed_cli_runs_the_program_with_its_language_host(
        tmp_path: Path, project: PulumiProject) -> None:
    installed = installed_layout(tmp_path / "installed")
    done, bindir = toolchain(tmp_path / "tc", installed, mode="installed")
    assert done.returncode == 0, done.stderr
    project.env["PATH"] = f"{bindir}:{project.env['PATH']}"
    project.up()
    assert (installed / "host.log").read_text().count("started") >= 1, "the engine used another language host"
    assert project.outputs()["phase"] == 0


def engine_log(project: PulumiProject, *args: str) -> list[str]:
    """The engine's own log lines (-v=9) of one command, messages only, in order."""
    done = project.run(*args, "--stack", project.stack, "-v=9", "--logtostderr")
    return [json.loads(line)["msg"] for line in done.stderr.splitlines() if line.startswith("{")]


def test_the_host_starts_the_one_dynamic_provider_together_with_the_program_before_its_first_resource(
        project: PulumiProject) -> None:
    # Pulumi.yaml's providerPreload: the host asks for the provider as it starts the program.
    project.up()
    log = engine_log(project, "preview")
    launched = [i for i, m in enumerate(log) if m.startswith("newPlugin(): Launching plugin 'pulumi-python (resource)'")]
    first_resource = next(i for i, m in enumerate(log) if m.startswith("registering resource: ty=pulumi:pulumi:Stack"))
    assert len(launched) == 1, "one provider process serves the prestart and every resource"
    assert launched[0] < first_resource, "the provider was started only when the program asked for it"
    assert any("Invoke(pulumi-python:dynamic:prestart)" in m for m in log)


def test_about_reports_the_virtualenvs_interpreter_and_its_version(project: PulumiProject) -> None:
    about = json.loads(project.run("about", "--json", "--stack", project.stack).stdout)
    assert about["runtime"]["language"] == "python"
    assert about["runtime"]["version"] == platform.python_version()
    assert Path(about["runtime"]["executable"]).resolve() == (VENV_BIN / "python").resolve()


def test_the_providers_modules_leave_pydantic_the_nats_client_the_cli_and_deepdiff_to_the_calls_that_use_them() -> None:
    # What the provider process preloads (Pulumi.yaml's providerPreload) and unpickles for every
    # check and diff: an unchanged preview never talks to the server, so it never loads the client;
    # it parses no spec (tests/test_unchanged_calls.py), so it never loads pydantic; and only the
    # gate's runs read the stack's model.
    preload = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]["providerPreload"].split()
    code = (f"import sys; import {', '.join(preload)}\n"
            "heavy = ('pydantic', 'pydantic_core', 'nats', 'deepdiff', 'click', 'components.jetstream.client', 'components.cli',"
            " 'components.spec.stack', 'components.spec.table')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.rsplit('.', 1)[0] in heavy"
            " or m in heavy))")
    done = subprocess.run([str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, timeout=60,
                          check=True, cwd=ROOT)
    assert preload == ["components.pulumi.stream", "components.pulumi.consumer", "components.pulumi.gate"]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_with_debug_every_sdk_debug_log_still_reaches_the_output(project: PulumiProject) -> None:
    # The host sends the SDK's debug-level logs without waiting for each (toolchain/langhost): the
    # output holds the same debug lines as when the SDK's exec script runs on its own.
    project.up()

    def debug_messages(**env: str) -> set[str]:
        # Each message once: the CLI prints it as it arrives and again under "Diagnostics", and
        # reprints a row whose status changes meanwhile, so how often a line appears is timing.
        project.env.update(env)
        out = project.preview("--debug").stdout
        return {m.strip() for m in re.findall(r"debug: (.+)$", out, re.MULTILINE)}

    fast = debug_messages()
    sdk_own = debug_messages(EVENTBUS_HOST_AS_OFFICIAL="1")
    assert fast == sdk_own
    registering = collections.Counter(m.split(":")[0] for m in fast)["registering resource"]
    assert registering >= 7  # the stack, the EventBus component, 2 streams, 2 durables, the gate


#: A module the provider imports in the background: it notes its name in the file MARKERS names.
MARKER = """
import os
with open(os.environ["MARKERS"], "a", encoding="utf-8") as fh:
    fh.write(__name__ + "\\n")
"""


def test_the_provider_preloads_what_updates_need_for_pulumi_up_and_not_for_a_preview(tmp_path: Path) -> None:
    project = PulumiProject(tmp_path, program=ROOT / "tests" / "fixtures" / "programs" / "preload_update",
                            namespace="preload-update")
    for name in ("preload_marker_start", "preload_marker_update"):
        (project.dir / f"{name}.py").write_text(MARKER)
    markers = tmp_path / "markers"
    project.env["MARKERS"] = str(markers)

    def preloaded(*command: str) -> list[str]:
        markers.write_text("")
        project.run(*command, "--stack", project.stack)  # the program waits for the provider's notes
        return markers.read_text().split()

    assert preloaded("preview") == ["preload_marker_start"]
    assert preloaded("up", "--yes", "--skip-preview") == ["preload_marker_start", "preload_marker_update"]


@pytest.mark.parametrize("program", [ROOT, ROOT / "benchmarks" / "scale_program"], ids=["project", "scale_program"])
def test_the_update_preload_names_modules_that_import_and_bring_what_creates_need(program: Path) -> None:
    # The shim swallows a failed preload (the provider reports it when a call needs the module),
    # so a misspelt name would only make `pulumi up` slower, silently.
    options = yaml.safe_load((program / "Pulumi.yaml").read_text())["runtime"]["options"]
    names = options["providerPreloadUpdate"].split()
    code = (f"import json, sys; import {', '.join(names)}\n"
            "print(json.dumps(sorted(m for m in ('pydantic', 'nats', 'components.migration.handover') if m in sys.modules)))")
    done = subprocess.run([str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, timeout=60,
                          check=True, cwd=ROOT)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["components.migration.handover", "nats", "pydantic"]
