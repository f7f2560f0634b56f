"""What every benchmark shares: the machine line, and a PostgreSQL database of its own.

Imported by the scripts beside it (``python bench/x.py`` puts this folder on the path).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from duly.db import upgrade
from duly.engine.store.sql import create_db_engine

DEFAULT_PG = os.environ.get("DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` (``?`` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def machine(pg_url: str | None = None) -> str:
    """One line naming the machine, its CPUs, Python and (given ``pg_url``) PostgreSQL."""
    line = (f"{platform.node()} · {platform.system()} {platform.machine()} · {os.cpu_count()} "
            f"CPUs ({cpu_model()}) · Python {platform.python_version()}")  # fmt: skip
    if pg_url:
        admin = create_engine(pg_url)
        with admin.connect() as conn:
            line += f" · PostgreSQL {conn.execute(text('SHOW server_version')).scalar_one()}"
        admin.dispose()
    return line


def database_url(pg_url: str, name: str) -> str:
    """``pg_url`` pointed at the database ``name``."""
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


def fresh_database(pg_url: str, name: str, *, migrate: bool = True) -> str:
    """Drop and create the database ``name`` on ``pg_url``'s server, migrated; its URL."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = database_url(pg_url, name)
    if migrate:
        engine = create_db_engine(url)
        upgrade(engine)
        engine.dispose()
    return url


def drop_database(pg_url: str, name: str) -> None:
    """Drop the database ``name`` (its connections closed first)."""
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
