"""How tests reach a real Kafka broker.

Order of preference:
1. ``CARBON_KAFKA_BOOTSTRAP`` (any broker you point at, e.g. ``127.0.0.1:9092``);
2. a throwaway Kafka container (KRaft) when a Docker engine answers;
3. the local broker managed by ``deploy/local/kafka.sh`` (Java 17 + Maven, no Docker).
If none works, a ``RuntimeError`` says what was tried: tests needing Kafka fail rather
than skip, so a green run always means they ran.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from tests.infra import docker_answers, one_line, rel, run_start_script, stop_quietly

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO_ROOT / "deploy" / "local" / "kafka.sh"
BOOTSTRAP_ENV = "CARBON_KAFKA_BOOTSTRAP"
DOCKER_IMAGE = "confluentinc/cp-kafka:7.6.0"
# The first start fetches the broker jars; under pytest-xdist the other workers wait on its lock.
SCRIPT_TIMEOUT_S = 600

_lock = threading.Lock()
_cached: str | Exception | None = None


def kafka_bootstrap() -> str:
    """``host:port`` of a running Kafka broker that allows topic creation.

    Resolved once per process; a failure is cached too, so a missing broker costs
    one attempt per worker instead of one per test.
    """
    global _cached
    with _lock:
        if _cached is None:
            try:
                _cached = find_bootstrap()
            except RuntimeError as exc:
                _cached = exc
        if isinstance(_cached, Exception):
            raise RuntimeError(str(_cached)) from _cached
        return _cached


def find_bootstrap() -> str:
    """Uncached lookup behind :func:`kafka_bootstrap`."""
    tried: list[str] = []

    env = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if env:
        return env
    tried.append(f"{BOOTSTRAP_ENV} is not set")

    bootstrap = _from_docker(tried)
    if bootstrap:
        return bootstrap

    bootstrap = _from_local_script(tried)
    if bootstrap:
        return bootstrap

    raise RuntimeError(
        "No Kafka broker for the tests. Tried, in order:\n"
        + "".join(f"  - {line}\n" for line in tried)
        + "Fix one of:\n"
        f"  - export {BOOTSTRAP_ENV}=HOST:PORT of a broker that allows topic creation;\n"
        f"  - start a Docker engine (the tests then run {DOCKER_IMAGE});\n"
        "  - install Java 17+ and Maven (Debian: apt-get install -y openjdk-17-jdk-headless maven) "
        "and run deploy/local/kafka.sh start (it fetches the broker from Maven Central once)."
    )


def _from_docker(tried: list[str]) -> str | None:
    if not docker_answers(tried):
        return None
    try:
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.kafka import KafkaContainer

        container = KafkaContainer(DOCKER_IMAGE).with_kraft()
        container.start()
    except Exception as exc:  # e.g. image pull blocked; fall back to the local broker
        tried.append(f"Docker: engine answered but {DOCKER_IMAGE} did not start ({one_line(exc)})")
        return None
    atexit.register(stop_quietly, container)
    return container.get_bootstrap_server()


def _from_local_script(tried: list[str]) -> str | None:
    return run_start_script(KAFKA_SH, tried, SCRIPT_TIMEOUT_S)
