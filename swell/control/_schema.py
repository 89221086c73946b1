"""The store's tables, as SQLAlchemy Core metadata.

Alembic's migrations in ``swell/control/migrations`` create and change these
tables; this module is what the code reads and writes through.  A change here
needs a migration beside it (``tests/unit/control/test_store.py`` checks that
the migrated schema matches this metadata).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Index,
)

__all__ = [
    "api_keys",
    "async_requests",
    "deployments",
    "environments",
    "events",
    "metadata",
    "models",
    "promotions",
    "secrets",
    "workspace",
]

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model_id", String(32), ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # development | published
    Column("package_dir", Text, nullable=False),
    Column("python", Text, nullable=False, default=""),
    Column("settings", JSON, nullable=False),
    Column("build", String(16), nullable=False),  # building | built | failed
    Column("error", Text, nullable=True),
    Column("warnings", JSON, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("revision", Integer, nullable=False, default=1),
    Column("created_at", Float, nullable=False),
    Column("last_request_at", Float, nullable=True),
    Column("activated_at", Float, nullable=True),
)

environments = Table(
    "environments",
    metadata,
    Column("model_id", String(32), ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("deployment_id", String(32), nullable=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=True),
    Column("type", String(16), nullable=False),  # workspace | invoke
    Column("model_ids", JSON, nullable=True),  # invoke keys: the models they may call (null: all)
    Column("sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    UniqueConstraint("sha256", name="uq_api_keys_sha256"),
)

secrets = Table(
    "secrets",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# One row per accepted async request, written before its 201 is sent.  The
# server keeps only the unfinished ones in memory; after a restart it reads
# back every row that is QUEUED or IN_PROGRESS, or whose webhook is pending.
async_requests = Table(
    "async_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model_id", String(32), nullable=False),
    Column("deployment_id", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # QUEUED IN_PROGRESS SUCCEEDED FAILED EXPIRED CANCELED
    Column("priority", Integer, nullable=False),
    Column("model_input", LargeBinary, nullable=False),  # JSON bytes, sent to the model as they are
    Column("webhook_endpoint", Text, nullable=True),
    Column("retry", JSON, nullable=False),  # inference_retry_config, with its defaults filled in
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),  # still queued then: EXPIRED
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("result", LargeBinary, nullable=True),  # the model's answer, as it sent it
    Column("result_status", Integer, nullable=True),  # the model's HTTP status
    Column("error", Text, nullable=True),
    Column("webhook_status", String(32), nullable=False),  # NO_WEBHOOK_PROVIDED PENDING SUCCEEDED FAILED
    Column("webhook_attempts", Integer, nullable=False, default=0),
    Column("webhook_error", Text, nullable=True),
    Column("webhook_at", Float, nullable=True),
    Index("ix_async_requests_status", "status"),
    Index("ix_async_requests_webhook_status", "webhook_status"),
)

# Workspace-wide values (the webhook signing secret, encrypted), by name.
workspace = Table(
    "workspace",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# What happened to each deployment (scaling decisions with their reasons,
# replica lifecycle, settings, promotion, activation): the last EVENTS_KEPT
# per deployment survive a restart; older rows are deleted as new ones come.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment_id", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Index("ix_events_deployment_id", "deployment_id", "id"),
)

# Each environment's last rolling promotion and how far it got (its phase,
# step and share): the API shows it, and a start after a crash settles one that
# was still running (docs/control.md, "Rolling promotion").
promotions = Table(
    "promotions",
    metadata,
    Column("model_id", String(32), ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("environment", String(64), primary_key=True),
    Column("deployment_id", String(32), nullable=False),
    Column("previous_id", String(32), nullable=True),
    Column("plan", JSON, nullable=False),
    Column("state", JSON, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
