#!/usr/bin/env bash
# Puts a Pulumi CLI that fits the pinned SDK (requirements.txt) into BINDIR, and says
# which one it is. Two paths:
#
#   installed  a `pulumi` already on PATH (outside BINDIR) whose version is v3 and at
#              least the pinned SDK's, with the official `pulumi-language-python` and
#              the dynamic-provider plugin `pulumi-resource-pulumi-python` next to it
#              (as Pulumi's own installers and `pulumi/actions` lay them out).
#              BINDIR/pulumi becomes a symlink to it: the engine finds its bundled
#              plugins beside its own resolved executable (/proc/self/exe).
#   build      the CLI built from Go modules at the pinned version into a per-version
#              cache outside the clone, with the Python language host adaptor next
#              to it (below). Used when no installed CLI fits, e.g. on a machine with
#              no download access. A cached build is reused in well under a second.
#
# What the Go module proxy serves (checked 2026-11-23): pkg/v3 and sdk/v3 at
# the release tags. It refuses (403) the Python language host module
# (sdk/python/cmd/pulumi-language-python/v3, untagged: every commit and
# pseudo-version form) and the pulumi-command provider module
# (pulumi-command/provider, untagged). So the build path's language host is
# toolchain/langhost, a small Go LanguageRuntime server on the sdk/v3 module's own
# gRPC stubs that runs the SDK's pulumi-language-python-exec, and the
# pulumi-command plugin is not installed (see README, "Toolchain").
#
#   scripts/toolchain.sh BINDIR     # link the binaries into BINDIR (e.g. .venv/bin)
#
# Environment:
#   JSM_PULUMI      auto (default): installed when one fits, else build;
#                   installed: fail unless an installed CLI fits; build: always build.
#   JSM_CACHE_DIR   where built binaries are kept (default: $XDG_CACHE_HOME or
#                   ~/.cache, then /jetstream-migrate)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bindir="${1:?usage: toolchain.sh BINDIR}"
mkdir -p "$bindir"
bindir="$(cd "$bindir" && pwd)"

pin() { # the version pinned for a Python package in requirements.txt
  sed -n "s/^$1==\([0-9.]*\).*/\1/p" "$here/requirements.txt"
}
pulumi_v="$(pin pulumi)"
[ -n "$pulumi_v" ] || { echo "toolchain: pulumi must be pinned with == in requirements.txt" >&2; exit 1; }

cache="${JSM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jetstream-migrate}"
pulumi_dir="$cache/pulumi-v$pulumi_v"

export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-auto}" GOFLAGS=-mod=mod CGO_ENABLED=0

build_pulumi() {
  local work="$pulumi_dir.build"
  rm -rf "$work" "$pulumi_dir"
  mkdir -p "$work/bin"
  echo "toolchain: building pulumi v$pulumi_v from Go modules (a few minutes, once per machine)" >&2
  (
    cd "$work"
    go mod init local/pulumi-build >/dev/null 2>&1
    # The third-party replace that pulumi's own go.mod carries; replaces inside
    # dependencies are ignored, so the wrapper repeats it.
    go mod edit -replace=github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e
    go get -tool "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@v$pulumi_v"
    go build -trimpath -tags osusergo,grpcnotrace \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$pulumi_v" \
      -o bin/ github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    # The language host runs this script, and the engine runs this shim as
    # the dynamic-provider plugin; both ship in the sdk/v3 module.
    sdk="$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
    install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" bin/
    install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" bin/
  )
  mv "$work/bin" "$pulumi_dir"
  rm -rf "$work"
}

# -- the installed path ------------------------------------------------------------------
# Plugins the program needs beside an installed CLI: the Python language host and the
# dynamic-provider shim (every resource here is a dynamic provider).
# The language host, built once per pinned version and per version of its source.
# Its sources: main.go, and program.py, which main.go embeds (how it runs a program).
langhost_srcs=("$here/toolchain/langhost/main.go" "$here/toolchain/langhost/program.py")
langhost_dir="$pulumi_dir/langhost-$(cat "${langhost_srcs[@]}" | sha256sum | cut -c1-12)"

build_langhost() {
  local work="$langhost_dir.build"
  rm -rf "$work" && mkdir -p "$work"
  echo "toolchain: building the Python language host (toolchain/langhost) from Go modules" >&2
  (
    cd "$work"
    cp "${langhost_srcs[@]}" .
    go mod init local/langhost >/dev/null 2>&1
    go mod edit -require="github.com/pulumi/pulumi/sdk/v3@v$pulumi_v"
    go build -trimpath -ldflags "-s -w -X main.version=$pulumi_v" -o pulumi-language-python .
  )
  mkdir -p "$langhost_dir"
  mv "$work/pulumi-language-python" "$langhost_dir/"
  rm -rf "$work"
}

plugins=(pulumi-language-python pulumi-resource-pulumi-python)

version_fits() { # "v3.X.Y[-...]" is v3 and at least the pinned version
  local v="${1#v}" x y z px py pz
  [[ "$v" =~ ^3\.([0-9]+)\.([0-9]+) ]] || return 1
  x=3 y="${BASH_REMATCH[1]}" z="${BASH_REMATCH[2]}"
  IFS=. read -r px py pz <<<"$pulumi_v"
  [ "$x" = "$px" ] && { [ "$y" -gt "$py" ] || { [ "$y" -eq "$py" ] && [ "$z" -ge "$pz" ]; }; }
}

# The first `pulumi` on PATH that fits, outside BINDIR and the build cache (those are
# this script's own); why each other one does not fit goes to stderr.
find_installed() {
  local dir real home got missing p
  local IFS=:
  for dir in $PATH; do
    [ -n "$dir" ] && [ -x "$dir/pulumi" ] && [ ! -d "$dir/pulumi" ] || continue
    [ "$(cd "$dir" 2>/dev/null && pwd -P)" = "$(cd "$bindir" && pwd -P)" ] && continue
    real="$(readlink -f "$dir/pulumi")"
    home="$(dirname "$real")"
    [ "$home" = "$(readlink -f "$pulumi_dir" 2>/dev/null || echo "$pulumi_dir")" ] && continue
    got="$(PULUMI_SKIP_UPDATE_CHECK=true "$real" version 2>/dev/null | head -n1 || true)"
    if ! version_fits "$got"; then
      echo "toolchain: not using $real: version '${got:-unknown}' does not fit the pinned SDK (needs v3, at least v$pulumi_v)" >&2
      continue
    fi
    missing=""
    for p in "${plugins[@]}"; do [ -x "$home/$p" ] || missing="$missing $p"; done
    if [ -n "$missing" ]; then
      echo "toolchain: not using $real ($got): missing next to it:$missing" >&2
      continue
    fi
    printf '%s %s\n' "$real" "$got"
    return 0
  done
  return 1
}

use_installed() { # REAL VERSION: BINDIR/pulumi -> REAL; this script's own plugin files removed
  rm -f "$bindir/pulumi" "$bindir/pulumi-language-python" \
        "$bindir/pulumi-language-python-exec" "$bindir/pulumi-resource-pulumi-python"
  ln -s "$1" "$bindir/pulumi"
  printf 'installed %s %s\n' "$2" "$1" > "$bindir/.pulumi-toolchain"
  echo "toolchain: using the installed pulumi $2 at $1 (JSM_PULUMI=build builds it from Go modules instead)" >&2
}

use_build() {
  [ -x "$pulumi_dir/pulumi" ] || build_pulumi
  # The engine looks for its bundled plugins (the language host, the dynamic-provider
  # shim) next to its own resolved executable: so pulumi is a hard link (or a copy
  # across filesystems), and the plugins sit beside it.
  rm -f "$bindir/pulumi"
  ln "$pulumi_dir/pulumi" "$bindir/pulumi" 2>/dev/null || cp "$pulumi_dir/pulumi" "$bindir/pulumi"
  ln -sfn "$pulumi_dir/pulumi-language-python-exec" "$bindir/pulumi-language-python-exec"
  # The dynamic-provider shim: toolchain/provider.py (which says how it serves) in the project's
  # virtualenv (Pulumi.yaml's virtualenv option, else this one), as `-c` code so that the
  # engine's working directory, the project, is on sys.path; not exec'd, so the engine stays the
  # shim's parent (components/pulumi/lifeline.py watches that). It starts without site (-S,
  # 25 ms less): handing the provider to the zygote takes the standard library only, and
  # provider.py starts site itself when it serves the provider here.
  rm -f "$bindir/pulumi-resource-pulumi-python"
  cat > "$bindir/pulumi-resource-pulumi-python" <<SHIM
#!/bin/sh
venv="\${PULUMI_RUNTIME_VIRTUALENV:-}"
[ -z "\$venv" ] && [ "\${PULUMI_RUNTIME_TOOLCHAIN:-}" = uv ] && venv=.venv
case "\$venv" in
  "") python="$bindir/python" ;;
  /*) python="\${venv%/}/bin/python" ;;
  *) python="\$PWD/\${venv%/}/bin/python" ;;
esac
"\$python" -S -u -c 'import sys; __file__ = sys.argv.pop(1); exec(compile(open(__file__).read(), __file__, "exec"))' \
  "$here/toolchain/provider.py" "\$@"
SHIM
  chmod +x "$bindir/pulumi-resource-pulumi-python"
  # The language host: the Go adaptor, running programs with the SDK's exec script and, when
  # Pulumi.yaml names no virtualenv, this virtualenv's interpreter.
  [ -x "$langhost_dir/pulumi-language-python" ] || build_langhost
  cat > "$bindir/pulumi-language-python" <<HOST
#!/bin/sh
PULUMI_LANGUAGE_PYTHON_EXEC="$bindir/pulumi-language-python-exec" EVENTBUS_PYTHON="$bindir/python" EVENTBUS_PROVIDER_SCRIPT="$here/toolchain/provider.py" exec "$langhost_dir/pulumi-language-python" "\$@"
HOST
  chmod +x "$bindir/pulumi-language-python"
  printf 'build v%s %s\n' "$pulumi_v" "$pulumi_dir/pulumi" > "$bindir/.pulumi-toolchain"
  echo "toolchain: using pulumi v$pulumi_v built from Go modules ($pulumi_dir)" >&2
}

mode="${JSM_PULUMI:-auto}"
case "$mode" in
  auto)
    if found="$(find_installed)"; then use_installed ${found}; else use_build; fi ;;
  installed)
    found="$(find_installed)" || {
      echo "toolchain: JSM_PULUMI=installed, but no pulumi on PATH fits: install Pulumi v$pulumi_v or later" \
           "(with its pulumi-language-python), or unset JSM_PULUMI to build it from Go modules" >&2
      exit 1
    }
    use_installed ${found} ;;
  build) use_build ;;
  *) echo "toolchain: JSM_PULUMI must be auto, installed or build (got '$mode')" >&2; exit 1 ;;
esac

got="$(PULUMI_SKIP_UPDATE_CHECK=true "$bindir/pulumi" version)"
version_fits "$got" || { echo "toolchain: $bindir/pulumi says '$got', expected v3 at least v$pulumi_v" >&2; exit 1; }
