"""docker-compose.yml: valid for Docker Compose, and the platform's wiring checked in Python."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from carbon.cli import SERVICES
from carbon.kafka import TOPIC

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = {spec.name: spec for spec in SERVICES}
# Values the file must take from the environment (required), never spell out.
REQUIRED_FROM_ENV = ("CARBON_JWT_SECRET", "CARBON_POSTGRES_PASSWORD")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY($|_)", re.IGNORECASE)
REQUIRED_REF = re.compile(r"^\$\{(?P<var>[A-Z0-9_]+):\?[^}]*\}$")
DATABASE_URL = re.compile(
    r"^postgresql\+psycopg://(?P<user>[^:@]+):(?P<password>\$\{[^}]*\})@(?P<host>[^:/]+):(?P<port>\d+)/(?P<database>\w+)$"
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def compose_command() -> list[str]:
    """Docker's compose plugin when the docker client has it, else Debian's docker-compose."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed: install Docker's compose plugin, "
        "or run `deploy/local/tools.sh docker-compose` as root (Debian's docker-compose package)"
    )


def run_config(env_overrides: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = {**os.environ}
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


# --- the file as Docker Compose reads it ---------------------------------------------------------


def test_compose_accepts_the_file() -> None:
    result = run_config({var: "compose-config-check" for var in REQUIRED_FROM_ENV})
    assert result.returncode == 0, f"{' '.join(compose_command())} config -q failed:\n{result.stderr}"


@pytest.mark.parametrize("variable", REQUIRED_FROM_ENV)
def test_compose_refuses_to_start_without_the_secret(variable: str) -> None:
    result = run_config({var: "compose-config-check" for var in REQUIRED_FROM_ENV} | {variable: None})
    assert result.returncode != 0
    assert variable in result.stderr


def test_no_keys_that_docker_compose_1_29_refuses(compose: dict) -> None:
    # `name:` is Compose v2 only; `version:` is obsolete in v2 and selects the old schema in 1.29.
    assert "name" not in compose
    assert "version" not in compose


# --- semantics ----------------------------------------------------------------------------------


def test_every_service_has_a_healthcheck(services: dict) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {check.get('test')}"


def test_every_dependency_waits_for_health(services: dict) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must be a mapping with conditions"
        for target, condition in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {target}: {condition}"


def test_dependencies_follow_the_architecture(services: dict) -> None:
    needs = {name: set(service.get("depends_on", {})) for name, service in services.items()}
    for name in APP_SERVICES:
        assert {"postgres", "otel-collector"} <= needs[name], name
    assert "kafka" in needs["account"]  # the outbox relay publishes
    for projection in ("rating", "disclosure"):
        assert {"kafka", "account"} <= needs[projection], projection
    assert "account" in needs["accounting"]
    assert "rating" in needs["disclosure"]  # the access log


def test_app_services_run_their_factory_from_the_one_image(services: dict) -> None:
    images = set()
    for name, spec in APP_SERVICES.items():
        service = services[name]
        assert service.get("build") in (".", {"context": "."}), f"{name} is not built from the Dockerfile"
        images.add(service["image"])
        command = service["command"]
        assert command[:2] == ["uvicorn", spec.factory] and "--factory" in command, f"{name}: {command}"
        assert command[command.index("--port") + 1] == str(spec.port)
        assert command[command.index("--host") + 1] == "0.0.0.0"
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{spec.port}/readyz" in probe, f"{name}: healthcheck {probe}"
        assert any(str(p).endswith(f"{spec.port}:{spec.port}") for p in service.get("ports", [])), name
        assert service.get("read_only") is True and "/tmp" in service.get("tmpfs", []), f"{name}: root not read-only"
    assert len(images) == 1, images


def test_each_app_service_has_its_own_database(services: dict) -> None:
    init_sql = (ROOT / "deploy/compose/postgres-init.sql").read_text()
    created = set(re.findall(r"CREATE DATABASE (\w+)", init_sql, re.IGNORECASE))
    created.add(environment(services["postgres"])["POSTGRES_DB"])
    databases = {}
    for name in APP_SERVICES:
        url = environment(services[name])["CARBON_DATABASE_URL"]
        # Not urlsplit: the interpolation's "?" would start a query.
        parts = DATABASE_URL.match(url)
        assert parts, f"{name}: {url}"
        assert parts["host"] == "postgres" and parts["port"] == "5432", url
        # The password is interpolated from the environment, never written here.
        assert REQUIRED_REF.match(parts["password"]), f"{name}: database password {parts['password']!r}"
        databases[name] = parts["database"]
    assert len(set(databases.values())) == len(APP_SERVICES), databases
    assert set(databases.values()) <= created, f"not created by the init script: {set(databases.values()) - created}"


def test_app_services_use_kafka_and_reach_each_other(services: dict) -> None:
    kafka_env = environment(services["kafka"])
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    for name in APP_SERVICES:
        env = environment(services[name])
        assert env["CARBON_TRANSPORT"] == "kafka", name
        assert env["CARBON_KAFKA_BOOTSTRAP"] in {a.split("//", 1)[1] for a in advertised.split(",")}, name
        assert env["CARBON_ACCOUNT_URL"] == f"http://account:{APP_SERVICES['account'].port}", name
        assert env.get("CARBON_KAFKA_TOPIC", TOPIC) == TOPIC
    assert environment(services["disclosure"])["CARBON_RATING_URL"] == f"http://rating:{APP_SERVICES['rating'].port}"


def test_kafka_runs_kraft_from_the_official_image(services: dict) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)


def test_no_secret_literal(services: dict) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                match = REQUIRED_REF.match(value)
                assert match, f"{name}: {key} must come from the environment as ${{VAR:?message}}, not {value!r}"
    for variable in REQUIRED_FROM_ENV:
        # No fallback value anywhere: ${VAR:-default} or ${VAR-default} would put a secret in the file.
        assert not re.search(r"\$\{" + variable + r":?-", COMPOSE_FILE.read_text()), variable
    for name in APP_SERVICES:
        assert REQUIRED_REF.match(environment(services[name])["CARBON_JWT_SECRET"]), name


def test_traces_go_through_the_collector_to_jaeger(services: dict) -> None:
    collector = services["otel-collector"]
    dockerfile = ROOT / collector["build"]["context"] / collector["build"]["dockerfile"]
    assert re.search(r"^FROM otel/opentelemetry-collector-contrib:\S+", dockerfile.read_text(), re.MULTILINE)
    assert services["jaeger"]["image"].startswith("jaegertracing/")
    mounted = {}
    for volume in collector["volumes"]:
        source, target = volume.split(":")[:2]
        mounted[target] = ROOT / source
    config_path = next(arg.split("=", 1)[1] for arg in collector["command"] if arg.startswith("--config="))
    config = yaml.safe_load(mounted[config_path].read_text())

    # Every component a pipeline names is defined; traces leave for Jaeger's OTLP port.
    pipelines = config["service"]["pipelines"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{component} is not defined under {kind}"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    trace_targets = {config["exporters"][e].get("endpoint") for e in pipelines["traces"]["exporters"]}
    assert "jaeger:4317" in trace_targets
    health_port = config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]
    assert f":{health_port}/" in " ".join(collector["healthcheck"]["test"])

    http_port = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    for name in APP_SERVICES:
        env = environment(services[name])
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{http_port}"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


def test_named_volumes_are_declared(compose: dict, services: dict) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                used.add(source)
    assert used == declared
    # The data of the stateful services outlives their containers.
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert any(v.endswith(":" + environment(services["kafka"])["KAFKA_LOG_DIRS"]) for v in services["kafka"]["volumes"])
