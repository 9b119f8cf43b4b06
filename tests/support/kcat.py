"""kcat, a Kafka client independent of the platform's: the tests read the topic with it as a partner would."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.infra import REPO_ROOT

TOOLS_SH = REPO_ROOT / "deploy" / "local" / "tools.sh"
INSTALL_TIMEOUT_S = 300


def kcat_path() -> str:
    """The kcat executable; installed from Debian's packages when missing and we are root, else the test fails."""
    found = shutil.which("kcat")
    if found is None and os.geteuid() == 0:
        done = subprocess.run(["bash", str(TOOLS_SH)], capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, check=False)
        found = shutil.which("kcat")
        if found is None:
            tail = "\n".join(done.stderr.strip().splitlines()[-10:])
            pytest.fail(f"deploy/local/tools.sh could not install kcat (exit {done.returncode}):\n{tail}")
    if found is None:
        pytest.fail("kcat is not installed: run deploy/local/tools.sh as root (Debian: apt-get install -y kcat)")
    return found
