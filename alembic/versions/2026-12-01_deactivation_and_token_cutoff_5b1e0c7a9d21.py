"""users: deactivated_at and tokens_valid_after

Revision ID: 5b1e0c7a9d21
Revises: d38d528398ba
Create Date: 2026-12-01 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "5b1e0c7a9d21"
down_revision: str | None = "d38d528398ba"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
COLUMNS = ("deactivated_at", "tokens_valid_after")


def upgrade() -> None:
    if op.get_context().dialect.name in ("mysql", "mariadb"):
        # Nullable columns at the end, added in one statement: MariaDB (10.3+) and MySQL (8.0+)
        # add them to the table's metadata alone, however many rows it has. Asked for by
        # name, so that a server that would rebuild the table refuses instead.
        added = ", ".join(f"ADD COLUMN {name} DATETIME(6) NULL" for name in COLUMNS)
        op.execute(f"ALTER TABLE users {added}, ALGORITHM=INSTANT")
        return
    with op.batch_alter_table("users") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, UTC_DATETIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
