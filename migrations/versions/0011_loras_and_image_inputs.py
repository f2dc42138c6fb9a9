"""LoRAs, image inputs and hires. fix per request: the job's LoRA set, its img2img/inpainting inputs, its
hires pass, and the most LoRAs a plan allows in one request.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('loras', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('inputs', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('hires', sa.JSON(), nullable=True))
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_loras', sa.Integer(), server_default='4', nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('max_loras')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('hires')
        batch_op.drop_column('inputs')
        batch_op.drop_column('loras')
