"""Platform processes for fault tests: a service (``python -m uvicorn …:create_app --factory``, as ``carbon
up`` starts it) or any other command (the relay), each killable with SIGKILL and started again, its log kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.infra import REPO_ROOT
from tests.live import free_port


class ChildProcess:
    """A command in its own session, its output in ``{name}-{run}.log`` (kept for failures); killable."""

    def __init__(self, command: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        self.command, self.name, self.log_dir = command, name, log_dir
        self.env = {**os.environ, **env}
        self.runs = 0
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.command, cwd=REPO_ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"{self.name} exited (code {self.proc and self.proc.returncode}):\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no chance to finish or roll back anything itself."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class ServiceProcess(ChildProcess):
    """A service under uvicorn, as ``carbon up`` runs it; ``start`` returns once it answers."""

    def __init__(self, factory: str, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.factory = factory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
                          "--port", str(self.port), "--log-level", "warning", "--no-access-log"], env, log_dir, name)

    def start(self, ready_timeout_s: float = 60) -> None:
        super().start()
        deadline = time.monotonic() + ready_timeout_s
        while True:
            self.assert_alive()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (
                f"{self.name} did not answer within {ready_timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)
