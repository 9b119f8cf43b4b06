"""Alembic environment of the disclosure service; run through ``carbon.migrate.upgrade``."""

from alembic import context

connection = context.config.attributes["connection"]
# Its own version table, so the service's revisions never mix with another schema's in a shared database.
context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                  version_table="alembic_version_disclosure")
with context.begin_transaction():
    context.run_migrations()
