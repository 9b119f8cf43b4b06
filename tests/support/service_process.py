"""A platform service as its own process (``python -m uvicorn …:create_app --factory``), as ``carbon up``
starts it, so a test can SIGKILL it and start it again; its log is kept for failures."""

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


class ServiceProcess:
    def __init__(self, factory: str, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.factory, self.name, self.log_dir = factory, name, log_dir
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runs = 0
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.runs}.log"

    def start(self, ready_timeout_s: float = 60) -> None:
        self.runs += 1
        command = [sys.executable, "-m", "uvicorn", self.factory, "--factory", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
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
