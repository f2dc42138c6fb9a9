"""Quotas, rate limits, idempotency keys, daily usage rollup; plan limits and account/key overrides.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:39:45.146840
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op



revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('quota_counters',
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('scope_id', sa.String(length=40), nullable=False),
    sa.Column('period', sa.String(length=8), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.Column('reserved', sa.Integer(), nullable=False),
    sa.Column('cap', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'scope_id', 'period', 'period_start', name=op.f('pk_quota_counters'))
    )
    op.create_table('usage_daily',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('api_key_id', sa.String(length=40), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('license', sa.String(length=64), nullable=True),
    sa.Column('images', sa.Integer(), nullable=False),
    sa.Column('megapixel_steps', sa.Float(), nullable=False),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.Column('price_units', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('day', 'account_id', 'api_key_id', 'model', name=op.f('pk_usage_daily'))
    )
    op.create_table('idempotency_keys',
    sa.Column('api_key_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('endpoint', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_idempotency_keys_api_key_id_api_keys')),
    sa.PrimaryKeyConstraint('api_key_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index('ix_idempotency_keys_expires_at', ['expires_at'], unique=False)

    op.create_table('rate_limit_state',
    sa.Column('api_key_id', sa.String(length=40), nullable=False),
    sa.Column('tat', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_rate_limit_state_api_key_id_api_keys')),
    sa.PrimaryKeyConstraint('api_key_id', name=op.f('pk_rate_limit_state'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('limit_overrides', sa.JSON(), nullable=False, server_default='{}'))

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('limit_overrides', sa.JSON(), nullable=False, server_default='{}'))

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quota_day', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('quota_month', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('reservation_state', sa.String(length=12), nullable=False,
                                      server_default='none'))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_jobs_key_status', ['api_key_id', 'status'], unique=False)

    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requests_per_minute', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('burst', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_concurrent_jobs', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_queued_jobs', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('allowed_models', sa.JSON(), nullable=True))

    # The free plan gets modest rate and concurrency limits; internal stays unlimited.
    op.execute("UPDATE plans SET requests_per_minute = 60, burst = 10, max_concurrent_jobs = 4, "
               "max_queued_jobs = 20 WHERE code = 'free'")

    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('price_units', sa.Integer(), nullable=False, server_default='0'))



def downgrade() -> None:
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.drop_column('price_units')

    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('allowed_models')
        batch_op.drop_column('max_queued_jobs')
        batch_op.drop_column('max_concurrent_jobs')
        batch_op.drop_column('burst')
        batch_op.drop_column('requests_per_minute')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_key_status')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('reservation_state')
        batch_op.drop_column('quota_month')
        batch_op.drop_column('quota_day')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('limit_overrides')

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('limit_overrides')

    op.drop_table('rate_limit_state')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotency_keys_expires_at')

    op.drop_table('idempotency_keys')
    op.drop_table('usage_daily')
    op.drop_table('quota_counters')
