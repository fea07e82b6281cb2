"""Alembic environment: runs on the connection the caller passes in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from randomizer.models import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=Base.metadata, transaction_per_migration=False
)
with context.begin_transaction():
    context.run_migrations()
