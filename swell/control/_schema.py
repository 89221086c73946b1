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
)

__all__ = ["api_keys", "deployments", "environments", "metadata", "models", "secrets"]

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
