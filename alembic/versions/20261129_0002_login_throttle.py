"""login throttle: account-cap flag and pruning index on login_failures

Revision ID: 0002_throttle
Revises: 0001
Create Date: 2026-11-29 04:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_throttle"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("counts_for_account", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.create_index("ix_login_failures_attempted_at", ["attempted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_login_failures_attempted_at")
        batch_op.drop_column("counts_for_account")
