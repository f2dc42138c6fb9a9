"""Moderation: incidents, artist opt-out registry, image review queue, audit log; account
max_rating and review_threshold; output status (delivered/withheld/removed) and charged flag.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 20:05:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('moderation_incidents',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('api_key_id', sa.String(length=40), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('matched', sa.JSON(), nullable=False),
    sa.Column('optout_id', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=64), nullable=True),
    sa.Column('endpoint', sa.String(length=40), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('negative_prompt', sa.Text(), nullable=False),
    sa.Column('strike', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('suspended_account', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                            name=op.f('fk_moderation_incidents_account_id_accounts')),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'],
                            name=op.f('fk_moderation_incidents_api_key_id_api_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_incidents'))
    )
    with op.batch_alter_table('moderation_incidents', schema=None) as batch_op:
        batch_op.create_index('ix_moderation_incidents_account_category_created',
                              ['account_id', 'category', 'created_at'], unique=False)
        batch_op.create_index('ix_moderation_incidents_key_created', ['api_key_id', 'created_at'], unique=False)
        batch_op.create_index('ix_moderation_incidents_created', ['created_at'], unique=False)

    op.create_table('artist_optouts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('aliases', sa.JSON(), nullable=False),
    sa.Column('require_context', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artist_optouts'))
    )
    with op.batch_alter_table('artist_optouts', schema=None) as batch_op:
        batch_op.create_index('ix_artist_optouts_deleted_at', ['deleted_at'], unique=False)

    op.create_table('moderation_reviews',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('image_id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('api_key_id', sa.String(length=40), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('decided_by', sa.String(length=40), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_moderation_reviews_account_id_accounts')),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_moderation_reviews_api_key_id_api_keys')),
    sa.ForeignKeyConstraint(['image_id'], ['job_outputs.id'],
                            name=op.f('fk_moderation_reviews_image_id_job_outputs')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_moderation_reviews_job_id_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_reviews')),
    sa.UniqueConstraint('image_id', name=op.f('uq_moderation_reviews_image_id'))
    )
    with op.batch_alter_table('moderation_reviews', schema=None) as batch_op:
        batch_op.create_index('ix_moderation_reviews_status_created', ['status', 'created_at'], unique=False)

    op.create_table('moderation_audit_log',
    sa.Column('id', _BIG_ID, autoincrement=True, nullable=False),
    sa.Column('actor_key_id', sa.String(length=40), nullable=False),
    sa.Column('actor_account_id', sa.String(length=40), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('target_type', sa.String(length=20), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_audit_log'))
    )
    with op.batch_alter_table('moderation_audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_moderation_audit_log_created', ['created_at'], unique=False)

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_rating', sa.String(length=16), nullable=False, server_default='safe'))
        batch_op.add_column(sa.Column('review_threshold', sa.Float(), nullable=False, server_default='0.8'))

    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=12), nullable=False, server_default='delivered'))
        batch_op.add_column(sa.Column('charged', sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table('job_outputs', schema=None) as batch_op:
        batch_op.drop_column('charged')
        batch_op.drop_column('status')

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('review_threshold')
        batch_op.drop_column('max_rating')

    with op.batch_alter_table('moderation_audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_moderation_audit_log_created')
    op.drop_table('moderation_audit_log')

    with op.batch_alter_table('moderation_reviews', schema=None) as batch_op:
        batch_op.drop_index('ix_moderation_reviews_status_created')
    op.drop_table('moderation_reviews')

    with op.batch_alter_table('artist_optouts', schema=None) as batch_op:
        batch_op.drop_index('ix_artist_optouts_deleted_at')
    op.drop_table('artist_optouts')

    with op.batch_alter_table('moderation_incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_moderation_incidents_created')
        batch_op.drop_index('ix_moderation_incidents_key_created')
        batch_op.drop_index('ix_moderation_incidents_account_category_created')
    op.drop_table('moderation_incidents')
