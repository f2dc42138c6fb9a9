"""Settlement: the ledger's period day, and one job per idempotency key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before this revision counted in the day they were written; that is the best
    # estimate of their reservation's day (the same day unless a job crossed midnight).
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('usage_day', sa.Date(), nullable=True))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("UPDATE usage_ledger SET usage_day = (created_at AT TIME ZONE 'UTC')::date")
    else:
        op.execute("UPDATE usage_ledger SET usage_day = date(created_at)")
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.alter_column('usage_day', existing_type=sa.Date(), nullable=False)
        batch_op.create_index('ix_usage_ledger_license_usage_day', ['license', 'usage_day'], unique=False)
    # An idempotency key can never yield two jobs, whatever happens to the idempotency record.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('uq_jobs_api_key_id_idempotency_key', ['api_key_id', 'idempotency_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('uq_jobs_api_key_id_idempotency_key')
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_ledger_license_usage_day')
        batch_op.drop_column('usage_day')
