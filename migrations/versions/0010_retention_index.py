"""Retention: a partial index on finished_at over the jobs not yet erased, for the worker's purge.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_unerased_finished', ['finished_at'], unique=False,
                              postgresql_where=sa.text('deleted_at IS NULL'),
                              sqlite_where=sa.text('deleted_at IS NULL'))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_unerased_finished', postgresql_where=sa.text('deleted_at IS NULL'),
                            sqlite_where=sa.text('deleted_at IS NULL'))
