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
from pathlib import Path

from tests.infra import cached_per_process, discover, docker_answers, one_line, run_start_script, stop_quietly

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO_ROOT / "deploy" / "local" / "kafka.sh"
BOOTSTRAP_ENV = "CARBON_KAFKA_BOOTSTRAP"
DOCKER_IMAGE = "confluentinc/cp-kafka:7.6.0"
# The first start fetches the broker jars; under pytest-xdist the other workers wait on its lock.
SCRIPT_TIMEOUT_S = 600



def find_bootstrap() -> str:
    """``host:port`` of a running Kafka broker that allows topic creation."""
    return discover("Kafka broker", BOOTSTRAP_ENV, [_from_docker, _from_local_script], [
        f"export {BOOTSTRAP_ENV}=HOST:PORT of a broker that allows topic creation;",
        f"start a Docker engine (the tests then run {DOCKER_IMAGE});",
        "install Java 17+ and Maven (Debian: apt-get install -y openjdk-17-jdk-headless maven) "
        "and run deploy/local/kafka.sh start (it fetches the broker from Maven Central once).",
    ])


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


kafka_bootstrap = cached_per_process(find_bootstrap)
