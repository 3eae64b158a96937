"""The toolchain that set-up installs: versions line up and nothing reaches for the network."""

from __future__ import annotations

import subprocess
from importlib.metadata import version

from tests.harness import ROOT, VENV_BIN


def test_pulumi_cli_version_equals_v_plus_the_installed_sdk_version() -> None:
    out = subprocess.run([str(VENV_BIN / "pulumi"), "version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"v{version('pulumi')}"


def test_pulumi_and_its_bundled_plugins_sit_together_in_the_virtualenv() -> None:
    for name in ("pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python"):
        path = VENV_BIN / name
        assert path.exists() and path.stat().st_mode & 0o111, f"{name} missing or not executable"
    # A hard link (not a symlink) so the engine finds the plugins beside it.
    assert not (VENV_BIN / "pulumi").is_symlink()


def test_nats_server_from_the_wheel_is_2_15() -> None:
    out = subprocess.run([str(VENV_BIN / "nats-server"), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("nats-server: v2.15.")


def test_activation_turns_off_update_checks_and_plugin_downloads() -> None:
    activate = (VENV_BIN / "activate").read_text()
    for setting in ("PULUMI_SKIP_UPDATE_CHECK=true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"):
        assert f"export {setting}" in activate


def test_project_backend_is_a_local_file_backend() -> None:
    assert "url: file://./.pulumi-state" in (ROOT / "Pulumi.yaml").read_text()


def test_setup_run_again_is_quick_and_changes_nothing() -> None:
    before = (VENV_BIN / "pulumi").stat().st_ino
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True, check=True)
    assert "installing" not in done.stderr and "building" not in done.stderr
    assert (VENV_BIN / "pulumi").stat().st_ino == before


def test_committed_stack_files_parse_staging_one_replica_production_three() -> None:
    import yaml

    from components.config import parse_stack_config
    from components.diagnostics import stack_values

    def load(stack: str):
        path = ROOT / f"Pulumi.{stack}.yaml"
        return parse_stack_config(stack_values(yaml.safe_load(path.read_text()), str(path)))

    staging, production = load("staging"), load("production")
    assert (staging.replicas, production.replicas) == (1, 3)
    assert staging.nats_url == "nats://127.0.0.1:4223"
    assert len(production.nats_url.split(",")) == 3
