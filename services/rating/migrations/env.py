"""Alembic environment of the rating database; run through ``carbon.migrate.upgrade``."""

from alembic import context

connection = context.config.attributes["connection"]
# Its own version table, like the other services, so no two services' Alembic histories can collide.
context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                  version_table="rating_alembic_version")
with context.begin_transaction():
    context.run_migrations()
