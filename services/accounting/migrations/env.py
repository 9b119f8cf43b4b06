"""Alembic environment of the accounting database; run through ``carbon.migrate.upgrade``."""

from alembic import context

connection = context.config.attributes["connection"]
# Its own version table, so that the accounting schema can share a database with another service's.
context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                  version_table="accounting_alembic_version")
with context.begin_transaction():
    context.run_migrations()
