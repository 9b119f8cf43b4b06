"""Apply a service's Alembic migrations to its database, from code (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from carbon.db import is_sqlite, write_transaction


def upgrade(engine: Engine, script_location: Path, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    with write_transaction(engine) as conn:
        if not is_sqlite(conn):
            # Several processes may start at once against one database: migrate one at a time.
            conn.execute(text("SELECT pg_advisory_xact_lock(7201)"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
