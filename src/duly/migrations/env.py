"""Alembic environment for duly. Run through ``duly db upgrade`` (see :mod:`duly.db`)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import duly.auth.schema  # noqa: F401, RUF100  (adds the tokens table)
import duly.notify.schema
import duly.operations.balance_check.models  # noqa: F401, RUF100  (adds the balance check tables)
import duly.operations.execution.models  # noqa: F401, RUF100  (adds payment_attempts and the banking tables)
import duly.operations.outbox  # noqa: F401, RUF100  (adds the outbox)
import duly.operations.recurring.models  # noqa: F401, RUF100  (adds the recurring payments tables)
import duly.operations.transfers.models  # noqa: F401, RUF100  (adds the scheduled transfers tables)
from duly.engine.store.schema import metadata

config = context.config


def run_migrations_online() -> None:
    """Migrate on the connection handed over by :func:`duly.db.upgrade`."""
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `duly db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
