"""Database set-up: Alembic migrations for SQLite and PostgreSQL (``duly db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from duly.engine.store.connect import allow_long_statements

__all__ = ["current_revision", "head_revision", "is_up_to_date", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest migration this version of duly knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None if it has none)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_up_to_date(engine: Engine) -> bool:
    """Whether the database is at the head migration."""
    return current_revision(engine) == head_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Apply every migration up to ``revision``; return the revision reached."""
    cfg = _config()
    # A migration may rewrite or index a large table: no statement limit (the lock
    # timeout stays, so a migration never queues every node's statements behind it).
    with engine.begin() as conn, allow_long_statements(conn):
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    current = current_revision(engine)
    assert current is not None
    return current
