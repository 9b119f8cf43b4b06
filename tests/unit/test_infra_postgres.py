"""The test-infrastructure helpers that find PostgreSQL and hand out databases."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests import infra


@pytest.fixture
def no_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every discovery route disabled; returns where the fake script would live."""
    monkeypatch.delenv(infra.URL_ENV, raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    script = tmp_path / "postgres.sh"
    monkeypatch.setattr(infra, "POSTGRES_SH", script)
    return script


def test_environment_url_wins_and_gets_the_psycopg_driver(no_sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(infra.URL_ENV, "postgres://u:p%40ss@db.example:6543/admin")
    assert infra.find_server() == "postgresql+psycopg://u:p%40ss@db.example:6543/admin"


def test_non_postgres_url_is_rejected(no_sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(infra.URL_ENV, "sqlite:///x.db")
    with pytest.raises(RuntimeError, match="not a PostgreSQL URL"):
        infra.find_server()


def test_libpq_url_drops_the_driver() -> None:
    assert infra.libpq_url("postgresql+psycopg://a:b@h:1/d") == "postgresql://a:b@h:1/d"


def test_failure_names_every_route_and_the_fix(no_sources: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        infra.find_server()
    message = str(err.value)
    assert f"{infra.URL_ENV} is not set" in message
    assert "Docker: no engine socket" in message
    assert "postgres.sh: not found" in message
    assert "apt-get install -y postgresql" in message


def test_script_failure_is_reported_with_its_output(no_sources: Path) -> None:
    no_sources.write_text("echo 'postgres: error: port 5432 is taken' >&2\nexit 1\n")
    no_sources.chmod(no_sources.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(RuntimeError, match=r"(?s)exit 1:.*port 5432 is taken"):
        infra.find_server()


def test_script_url_is_its_last_stdout_line(no_sources: Path) -> None:
    no_sources.write_text(
        "echo 'postgres: ready' >&2\necho 'postgresql+psycopg://carbon:carbon@127.0.0.1:5999/carbon_test'\n"
    )
    assert infra.find_server() == "postgresql+psycopg://carbon:carbon@127.0.0.1:5999/carbon_test"


@pytest.mark.parametrize("prefix", ["Upper", "has-dash", "", "x" * 31, "1digit"])
def test_bad_prefix_is_refused_before_touching_a_server(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        with infra.fresh_database("postgresql+psycopg://nobody@127.0.0.1:1/none", prefix=prefix):
            pass


@pytest.mark.postgres
def test_fresh_database_is_private_and_dropped_even_with_open_connections() -> None:
    server = infra.postgres_server_url()
    assert server.startswith("postgresql+psycopg://")
    assert infra.postgres_server_url() == server

    with infra.fresh_database(server, prefix="carbon_infra") as first, infra.fresh_database(server) as second:
        first_name = sa.engine.make_url(first).database
        assert first_name.startswith("carbon_infra_")
        assert sa.engine.make_url(second).database.startswith("carbon_t_")
        assert first != second
        engine = sa.create_engine(first)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (x int)"))
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == first_name
        leaked = engine.connect()  # a test that forgets to close must not block the drop
        leaked.execute(sa.text("SELECT 1"))

    with psycopg.connect(infra.libpq_url(server)) as admin:
        exists = admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (first_name,)).fetchone()
    assert exists == (0,)
    leaked.invalidate()
    engine.dispose()
