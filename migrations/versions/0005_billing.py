"""Billing: usage outbox towards Stripe and its counters, received webhook events, invoices;
Stripe customer, subscription and past-due state on accounts; Stripe prices on plans.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 10:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('billing_outbox',
    sa.Column('usage_id', _BIG_ID, autoincrement=False, nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('stripe_customer_id', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claim_token', sa.String(length=32), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('doubt_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_billing_outbox_account_id_accounts')),
    sa.ForeignKeyConstraint(['usage_id'], ['usage_ledger.id'], name=op.f('fk_billing_outbox_usage_id_usage_ledger')),
    sa.PrimaryKeyConstraint('usage_id', name=op.f('pk_billing_outbox'))
    )
    with op.batch_alter_table('billing_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_billing_outbox_claim', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_billing_outbox_status_occurred', ['status', 'occurred_at'], unique=False)
        batch_op.create_index('ix_billing_outbox_account_occurred', ['account_id', 'occurred_at'], unique=False)

    op.create_table('billing_counters',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('value', _BIG_ID, nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_billing_counters'))
    )

    op.create_table('billing_webhook_events',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('stripe_customer_id', sa.String(length=255), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_webhook_events'))
    )
    with op.batch_alter_table('billing_webhook_events', schema=None) as batch_op:
        batch_op.create_index('ix_billing_webhook_events_unprocessed', ['processed_at', 'received_at'], unique=False)
        batch_op.create_index('ix_billing_webhook_events_customer', ['stripe_customer_id'], unique=False)

    op.create_table('billing_invoices',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('amount_due', _BIG_ID, nullable=False),
    sa.Column('amount_paid', _BIG_ID, nullable=False),
    sa.Column('currency', sa.String(length=8), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('event_created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_billing_invoices_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_invoices'))
    )
    with op.batch_alter_table('billing_invoices', schema=None) as batch_op:
        batch_op.create_index('ix_billing_invoices_account_status', ['account_id', 'status'], unique=False)

    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stripe_price_id', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('stripe_metered_price_id', sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_plans_stripe_price_id'), ['stripe_price_id'])

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stripe_customer_id', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('stripe_linked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('stripe_subscription_id', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('subscription_status', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('subscription_event_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('billing_past_due_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('billing_grace_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_accounts_stripe_customer_id'), ['stripe_customer_id'])


def downgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_accounts_stripe_customer_id'), type_='unique')
        batch_op.drop_column('billing_grace_until')
        batch_op.drop_column('billing_past_due_since')
        batch_op.drop_column('subscription_event_at')
        batch_op.drop_column('subscription_status')
        batch_op.drop_column('stripe_subscription_id')
        batch_op.drop_column('stripe_linked_at')
        batch_op.drop_column('stripe_customer_id')

    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_plans_stripe_price_id'), type_='unique')
        batch_op.drop_column('stripe_metered_price_id')
        batch_op.drop_column('stripe_price_id')

    with op.batch_alter_table('billing_invoices', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_invoices_account_status')
    op.drop_table('billing_invoices')
    with op.batch_alter_table('billing_webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_webhook_events_customer')
        batch_op.drop_index('ix_billing_webhook_events_unprocessed')
    op.drop_table('billing_webhook_events')
    op.drop_table('billing_counters')
    with op.batch_alter_table('billing_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_outbox_account_occurred')
        batch_op.drop_index('ix_billing_outbox_status_occurred')
        batch_op.drop_index('ix_billing_outbox_claim')
    op.drop_table('billing_outbox')
