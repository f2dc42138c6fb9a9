"""Licensing: versioned licence terms, licence counters and locks, revenue entries, frozen reports;
plan is_paid; job and ledger fields for fallbacks, overage and the plan at generation time.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-26 19:52:15.584627
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op



revision: str = '0004'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('license_locks',
    sa.Column('license_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('license_id', name=op.f('pk_license_locks'))
    )
    op.create_table('license_reports',
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('frozen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('month', name=op.f('pk_license_reports'))
    )
    op.create_table('license_usage_daily',
    sa.Column('license_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.Column('reserved', sa.Integer(), nullable=False),
    sa.Column('overage', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('license_id', 'day', name=op.f('pk_license_usage_daily'))
    )
    op.create_table('licenses',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('url', sa.String(length=500), nullable=True),
    sa.Column('monetization_allowed', sa.Boolean(), nullable=False),
    sa.Column('allowed_plans', sa.JSON(), nullable=True),
    sa.Column('monthly_image_cap', sa.Integer(), nullable=True),
    sa.Column('cap_period', sa.String(length=16), nullable=False),
    sa.Column('annual_revenue_cap_usd', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('warning_thresholds', sa.JSON(), nullable=False),
    sa.Column('at_cap', sa.String(length=16), nullable=False),
    sa.Column('fallback_model', sa.String(length=64), nullable=True),
    sa.Column('effective_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', 'version', name=op.f('pk_licenses'))
    )
    op.create_table('revenue_entries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('amount_usd', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('account_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_revenue_entries_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revenue_entries')),
    sa.UniqueConstraint('reference', name=op.f('uq_revenue_entries_reference'))
    )
    with op.batch_alter_table('revenue_entries', schema=None) as batch_op:
        batch_op.create_index('ix_revenue_entries_occurred_at', ['occurred_at'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_model', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('clip_skip', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('requested_license', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('license_overage', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('plan_code', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('plan_paid', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_paid', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_code', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('plan_paid', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('license_overage', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index('ix_usage_ledger_license_created', ['license', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_ledger_license_created')
        batch_op.drop_column('license_overage')
        batch_op.drop_column('plan_paid')
        batch_op.drop_column('plan_code')

    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('is_paid')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('plan_paid')
        batch_op.drop_column('plan_code')
        batch_op.drop_column('license_overage')
        batch_op.drop_column('requested_license')
        batch_op.drop_column('requested_model')
        batch_op.drop_column('clip_skip')

    with op.batch_alter_table('revenue_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_revenue_entries_occurred_at')

    op.drop_table('revenue_entries')
    op.drop_table('licenses')
    op.drop_table('license_usage_daily')
    op.drop_table('license_reports')
    op.drop_table('license_locks')
