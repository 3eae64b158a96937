#!/usr/bin/env bash
# What only the tests need, idempotent (make test runs it; quick when all is there):
#
# * a PostgreSQL server (Debian's `postgresql`), which tests/postgres.py starts on a
#   free loopback port for the shared-state-backend tests; installed with apt-get
#   when no /usr/lib/postgresql/*/bin/postgres exists (as root, or with sudo);
# * Node.js and the mermaid parser: `npm ci` of tests/mermaid/package-lock.json into
#   tests/mermaid/node_modules (gitignored), redone only when the lock file changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else echo "test-deps: needs root to run: $*" >&2; exit 1
  fi
}

apt_install() {
  echo "test-deps: installing $* (apt-get)" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  # The Debian package would also create and start a default cluster on port 5432;
  # the tests start their own, so none is created.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    as_root mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

need=()
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
command -v npm >/dev/null || need+=(nodejs npm)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

mermaid="$root/tests/mermaid"
stamp="$mermaid/node_modules/.installed"
want="$(sha256sum "$mermaid/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "test-deps: installing the mermaid parser (npm ci in tests/mermaid)" >&2
  (cd "$mermaid" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
fi
