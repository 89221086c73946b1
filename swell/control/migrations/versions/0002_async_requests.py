"""Async requests (persisted before they are accepted) and workspace values.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "async_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(32), nullable=False),
        sa.Column("deployment_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("model_input", sa.LargeBinary, nullable=False),
        sa.Column("webhook_endpoint", sa.Text, nullable=True),
        sa.Column("retry", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("result_status", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("webhook_status", sa.String(32), nullable=False),
        sa.Column("webhook_attempts", sa.Integer, nullable=False),
        sa.Column("webhook_error", sa.Text, nullable=True),
        sa.Column("webhook_at", sa.Float, nullable=True),
    )
    op.create_index("ix_async_requests_status", "async_requests", ["status"])
    op.create_index("ix_async_requests_webhook_status", "async_requests", ["webhook_status"])
    op.create_table(
        "workspace",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workspace")
    op.drop_index("ix_async_requests_webhook_status", "async_requests")
    op.drop_index("ix_async_requests_status", "async_requests")
    op.drop_table("async_requests")
