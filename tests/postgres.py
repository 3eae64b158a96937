"""A real PostgreSQL server for tests: Debian's `postgresql`, started on loopback.

`PostgresServer` runs `initdb` and `postgres` from /usr/lib/postgresql/<version>/bin
(scripts/test-deps.sh installs the package) on a free 127.0.0.1 port, with its data
and socket in a fresh temporary directory, password authentication for one
superuser, and fsync off (a throwaway test server). PostgreSQL refuses to run as
root, so under root both run as the package's `postgres` system user through
`runuser`, and the data directory is handed to that user. `stop()` stops the
server by the pid in its postmaster.pid and removes the directory.

`url(table)` is a Pulumi DIY backend URL (pkg/v3 backend/diy/postgres) whose state
goes into its own table, so tests sharing one server never see each other's stacks.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness import free_port

USER = "pulumi"
#: The system user the server runs as when the tests run as root.
SYSTEM_USER = "postgres"


def bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql/*/bin: run `make test-deps` "
                           "(scripts/test-deps.sh installs Debian's postgresql)")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = bin_dir()
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.as_root = os.geteuid() == 0

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", SYSTEM_USER, "--", *args] if self.as_root else args

    def start(self, timeout: float = 60.0) -> PostgresServer:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            owner = pwd.getpwnam(SYSTEM_USER)
            for path in (self.root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        subprocess.run(self._as_owner([
            str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions",
        ]), check=True, capture_output=True, timeout=timeout)
        pwfile.unlink()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self._as_owner([
                str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=50",
            ]), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True, check=False)
            if ready.returncode == 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"postgres not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def url(self, table: str) -> str:
        """A `postgres://` Pulumi backend URL keeping its state in `table`."""
        return (f"postgres://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"
                f"?sslmode=disable&table={table}")

    def query(self, sql: str) -> list[str]:
        """Rows of `sql` as psql prints them unaligned (one line a row, fields joined by |)."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres",
             "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env={**os.environ, "PGPASSWORD": self.password}, capture_output=True, text=True, check=True, timeout=30)
        return [line for line in done.stdout.splitlines() if line]

    def stop(self) -> None:
        pidfile = self.data / "postmaster.pid"
        if self.proc is not None and self.proc.poll() is None:
            # The server's own pid (runuser's child when run as root); SIGINT is a fast shutdown.
            pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else self.proc.pid
            os.kill(pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
