"""A broker of the test's own, run by deploy/local/kafka.sh on free ports, for tests that stop it.

Stopping the shared broker would break every other test using it at the same time (pytest-xdist
workers, other runs); a private one can be stopped and started at will.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.kafka_infra import KAFKA_SH
from tests.live import free_port

TIMEOUT_S = 300  # the first start may fetch the jars and format the storage


class PrivateBroker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "CARBON_KAFKA_DIR": str(directory), "CARBON_KAFKA_PORT": str(self.port),
                    "CARBON_KAFKA_CONTROLLER_PORT": str(free_port())}
        self.bootstrap = f"127.0.0.1:{self.port}"

    def run(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(KAFKA_SH), command], env=self.env, capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)

    def start(self) -> None:
        done = self.run("start")
        assert done.returncode == 0, f"kafka.sh start failed (exit {done.returncode}):\n{done.stderr[-3000:]}"

    def stop(self) -> None:
        done = self.run("stop")
        assert done.returncode == 0, f"kafka.sh stop failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        assert not self.running(), "the broker still runs after kafka.sh stop"

    def running(self) -> bool:
        return self.run("status").returncode != 3
