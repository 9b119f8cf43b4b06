"""Shared fixtures: every store-backed suite runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server() -> str:
    from tests import infra

    # Fails loudly (RuntimeError naming what was tried) when no PostgreSQL can be found or started.
    return infra.postgres_server_url()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    from tests import infra

    with infra.fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        request.applymarker(pytest.mark.postgres)
        yield request.getfixturevalue("postgres_url")
