"""Initial schema: plans (free seeded), accounts, keys, jobs, outputs, usage ledger, workers.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 19:07:33.555205
"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('plans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('monthly_image_quota', sa.Integer(), nullable=True),
    sa.Column('daily_image_quota', sa.Integer(), nullable=True),
    sa.Column('max_width', sa.Integer(), nullable=False),
    sa.Column('max_height', sa.Integer(), nullable=False),
    sa.Column('max_steps', sa.Integer(), nullable=False),
    sa.Column('max_n', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plans')),
    sa.UniqueConstraint('code', name=op.f('uq_plans_code'))
    )
    op.create_table('system_meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_system_meta'))
    )
    op.create_table('workers',
    sa.Column('id', sa.String(length=80), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('device', sa.String(length=40), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('models', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    op.create_table('accounts',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_accounts_plan_id_plans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accounts_plan_id'), ['plan_id'], unique=False)

    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_api_keys_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index('ix_api_keys_account_id', ['account_id'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('api_key_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('license', sa.String(length=64), nullable=True),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('negative_prompt', sa.Text(), nullable=False),
    sa.Column('revised_prompt', sa.Text(), nullable=False),
    sa.Column('revised_negative_prompt', sa.Text(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('steps', sa.Integer(), nullable=False),
    sa.Column('guidance_scale', sa.Float(), nullable=False),
    sa.Column('sampler', sa.String(length=40), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('output_format', sa.String(length=8), nullable=False),
    sa.Column('batch_key', sa.String(length=200), nullable=False),
    sa.Column('request_user', sa.String(length=200), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=80), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('progress_step', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('gpu_seconds', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_jobs_account_id_accounts')),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_jobs_api_key_id_api_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_account_created', ['account_id', 'created_at'], unique=False)
        batch_op.create_index('ix_jobs_claim', ['status', 'priority', 'created_at'], unique=False)

    op.create_table('job_outputs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('storage_key', sa.String(length=300), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_outputs_job_id_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_outputs'))
    )
    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.create_index('ix_job_outputs_job_id', ['job_id'], unique=False)

    op.create_table('usage_ledger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('image_id', sa.String(length=40), nullable=False),
    sa.Column('api_key_id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('license', sa.String(length=64), nullable=True),
    sa.Column('images', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('steps', sa.Integer(), nullable=False),
    sa.Column('megapixel_steps', sa.Float(), nullable=False),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_usage_ledger_account_id_accounts')),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_usage_ledger_api_key_id_api_keys')),
    sa.ForeignKeyConstraint(['image_id'], ['job_outputs.id'], name=op.f('fk_usage_ledger_image_id_job_outputs')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_usage_ledger_job_id_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_ledger')),
    sa.UniqueConstraint('image_id', name=op.f('uq_usage_ledger_image_id'))
    )
    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_usage_ledger_account_created', ['account_id', 'created_at'], unique=False)
        batch_op.create_index('ix_usage_ledger_job_id', ['job_id'], unique=False)
        batch_op.create_index('ix_usage_ledger_key_created', ['api_key_id', 'created_at'], unique=False)



    plans = sa.table(
        "plans",
        sa.column("code", sa.String), sa.column("name", sa.String),
        sa.column("monthly_image_quota", sa.Integer), sa.column("daily_image_quota", sa.Integer),
        sa.column("max_width", sa.Integer), sa.column("max_height", sa.Integer),
        sa.column("max_steps", sa.Integer), sa.column("max_n", sa.Integer),
        sa.column("priority", sa.Integer), sa.column("created_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    op.bulk_insert(plans, [
        # The default plan every new account gets.
        {"code": "free", "name": "Free", "monthly_image_quota": 300, "daily_image_quota": 50,
         "max_width": 1024, "max_height": 1024, "max_steps": 50, "max_n": 4, "priority": 0,
         "created_at": now},
        # The operator's own plan (bootstrap admin): no quotas, queue priority.
        {"code": "internal", "name": "Internal", "monthly_image_quota": None, "daily_image_quota": None,
         "max_width": 2048, "max_height": 2048, "max_steps": 150, "max_n": 8, "priority": 100,
         "created_at": now},
    ])


def downgrade() -> None:

    with op.batch_alter_table('usage_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_ledger_key_created')
        batch_op.drop_index('ix_usage_ledger_job_id')
        batch_op.drop_index('ix_usage_ledger_account_created')

    op.drop_table('usage_ledger')
    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.drop_index('ix_job_outputs_job_id')

    op.drop_table('job_outputs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_claim')
        batch_op.drop_index('ix_jobs_account_created')

    op.drop_table('jobs')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_api_keys_account_id')

    op.drop_table('api_keys')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accounts_plan_id'))

    op.drop_table('accounts')
    op.drop_table('workers')
    op.drop_table('system_meta')
    op.drop_table('plans')

