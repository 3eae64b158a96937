#!/usr/bin/env bash
# Builds the Pulumi CLI from Go modules at the version pinned in
# requirements.txt into a per-version cache outside the clone, and installs
# the Python language host next to it. Idempotent: a cached build is reused in
# well under a second.
#
# What the Go module proxy serves (checked 2026-11-23): pkg/v3 and sdk/v3 at
# the release tags. It refuses (403) the Python language host module
# (sdk/python/cmd/pulumi-language-python/v3, untagged: every commit and
# pseudo-version form) and the pulumi-command provider module
# (pulumi-command/provider, untagged). So the language host is
# toolchain/language_host.py, a thin LanguageRuntime adaptor on the Pulumi
# SDK's own gRPC stubs that runs the SDK's pulumi-language-python-exec, and the
# pulumi-command plugin is not installed (see README, "Toolchain").
#
#   scripts/toolchain.sh BINDIR     # link the binaries into BINDIR (e.g. .venv/bin)
#
# Environment:
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

[ -x "$pulumi_dir/pulumi" ] || build_pulumi

# The engine looks for its bundled plugins (the language host, the dynamic-provider
# shim) next to its own executable after resolving symlinks: so pulumi is a hard
# link (or a copy across filesystems), and the plugins sit beside it.
rm -f "$bindir/pulumi"
ln "$pulumi_dir/pulumi" "$bindir/pulumi" 2>/dev/null || cp "$pulumi_dir/pulumi" "$bindir/pulumi"
for f in pulumi-language-python-exec pulumi-resource-pulumi-python; do
  ln -sfn "$pulumi_dir/$f" "$bindir/$f"
done
# The language host: our adaptor, run by the interpreter of this virtualenv.
cat > "$bindir/pulumi-language-python" <<HOST
#!/bin/sh
PULUMI_LANGUAGE_PYTHON_EXEC="$bindir/pulumi-language-python-exec" exec "$bindir/python" "$here/toolchain/language_host.py" "\$@"
HOST
chmod +x "$bindir/pulumi-language-python"

got="$("$bindir/pulumi" version)"
[ "$got" = "v$pulumi_v" ] || { echo "toolchain: pulumi version says '$got', expected v$pulumi_v" >&2; exit 1; }
