"""A PostgreSQL cluster of the test's own, run by deploy/local/postgres.sh on a free port, for tests that stop it.

Restarting the shared server would break every other test using it at the same time (pytest-xdist
workers, other runs); a private cluster can be stopped, crashed and started at will.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.infra import POSTGRES_SH, libpq_url
from tests.live import free_port

TIMEOUT_S = 120


class PrivateCluster:
    def __init__(self) -> None:
        # Not under pytest's temporary directory: as root the server runs as the postgres user,
        # which must be able to reach its data directory.
        self.parent = Path(tempfile.mkdtemp(prefix="carbon-pg-"))
        self.parent.chmod(0o755)
        self.directory = self.parent / "data"
        self.port = free_port()
        self.env = {**os.environ, "CARBON_PG_DIR": str(self.directory), "CARBON_PG_PORT": str(self.port)}
        self.url: str | None = None

    def run(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(POSTGRES_SH), command], env=self.env, capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)

    def start(self) -> str:
        done = self.run("start")
        assert done.returncode == 0, f"postgres.sh start failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        self.url = done.stdout.strip().splitlines()[-1]
        return self.url

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, open transactions roll back."""
        done = self.run("stop")
        assert done.returncode == 0, f"postgres.sh stop failed (exit {done.returncode}):\n{done.stderr[-3000:]}"

    def crash(self) -> None:
        """An immediate shutdown (SIGQUIT to the postmaster): no checkpoint, the next start recovers from the WAL."""
        pid = int((self.directory / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, "the postmaster outlived its immediate shutdown"
            time.sleep(0.05)

    def create_database(self, prefix: str) -> str:
        """A new database on the cluster; returns its SQLAlchemy URL."""
        assert self.url is not None, "start the cluster first"
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def log_tail(self, lines: int = 30) -> str:
        path = self.directory / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.parent, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: its parent (pg_ctl's shell) may not have reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
