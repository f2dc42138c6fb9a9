"""Merge the moderation (0003) and licensing/billing (0004, 0005) branches.

Revision ID: 0006
Revises: 0003, 0005
Create Date: 2026-11-26
"""
from collections.abc import Sequence

revision: str = "0006"
down_revision: tuple[str, ...] = ("0003", "0005")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nothing to change: the branches touch disjoint tables and columns.
    pass


def downgrade() -> None:
    pass
