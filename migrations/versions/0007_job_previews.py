"""Live previews: the per-job preview interval, and the newest preview with its step.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without defaults: existing rows read as "no previews", and on Postgres
    # adding them is a catalogue change only, not a rewrite of the jobs table.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preview_every', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('preview', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('preview_step', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('preview_step')
        batch_op.drop_column('preview')
        batch_op.drop_column('preview_every')
