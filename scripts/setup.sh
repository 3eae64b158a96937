#!/usr/bin/env bash
# One-time and every-time set-up, idempotent: the virtualenv with the project and
# its tools, the Pulumi CLI (an installed one on PATH when it fits the pinned SDK,
# else built from Go modules and cached per version outside the clone: see
# scripts/toolchain.sh, which says which one it uses), and an activation script that
# keeps Pulumi off the network.
#
#   scripts/setup.sh                      then: source .venv/bin/activate
#   JSM_PULUMI=build scripts/setup.sh     always the Go build (JSM_PULUMI=installed: never)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating .venv" >&2
  "$python" -m venv "$venv"
fi

# Reinstall Python packages only when what they are installed from changed.
stamp="$venv/.installed"
want="$(cat requirements.txt requirements-binding.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r requirements.txt -r requirements-dev.txt -e .
  echo "$want" > "$stamp"
fi

bash "$root/scripts/toolchain.sh" "$venv/bin"

# The project's own bytecode, as pip writes it for installed packages: where
# PYTHONDONTWRITEBYTECODE is set, every program and provider process would otherwise compile
# components/ from source again (about 0.2 s each). Up-to-date files are left alone.
"$venv/bin/python" -m compileall -q components >/dev/null

# Activation: Pulumi never reaches for the network, and the local demo state and
# passphrase are defaults that an operator's own settings override.
marker="# aa-event-bus environment"
if ! grep -qF "$marker" "$venv/bin/activate"; then
  cat >> "$venv/bin/activate" <<ACT
$marker
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_IGNORE_AMBIENT_PLUGINS=true
# Local demo only (the staging stack on the embedded server); use your own for real stacks.
export PULUMI_CONFIG_PASSPHRASE="\${PULUMI_CONFIG_PASSPHRASE-aa-event-bus-local-demo}"
ACT
fi
mkdir -p "$root/.pulumi-state"
# Sidecars written before the backend URL had metadata=skip: Pulumi reads nothing from them, and an
# empty one (a deploy killed while writing it) fails every command with "failed to load checkpoint: EOF".
find "$root/.pulumi-state" -name '*.attrs' -type f -delete
