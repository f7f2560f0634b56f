"""The store on SQLAlchemy Core, for SQLite (embedded) and PostgreSQL (production).

Dialect differences are few and explicit:

* claiming: PostgreSQL locks candidate rows ``FOR UPDATE SKIP LOCKED`` and serialises
  per-job and per-serial-key limits with transaction advisory locks; SQLite has one writer,
  so every write transaction starts ``BEGIN IMMEDIATE`` and nothing else is needed;
* wake-ups: PostgreSQL sends ``NOTIFY duly_runs`` / ``duly_schedules`` at commit (see
  :mod:`duly.engine.notifier`); on SQLite subscribers in this process are called after commit,
  and other processes notice within ``max_idle_seconds``.
"""

from __future__ import annotations

from duly.engine.store.alerts import AlertQueries
from duly.engine.store.claims import ClaimQueries
from duly.engine.store.completions import CompletionQueries
from duly.engine.store.connect import create_db_engine
from duly.engine.store.executions import ExecutionQueries
from duly.engine.store.nodes import NodeQueries
from duly.engine.store.overview import OverviewQueries
from duly.engine.store.plumbing import SqlBase, SqlEffects
from duly.engine.store.runs import RunQueries
from duly.engine.store.schedules import ScheduleQueries
from duly.engine.store.supervision import SupervisionQueries

__all__ = ["SqlEffects", "SqlStore", "create_db_engine"]


class SqlStore(
    ScheduleQueries,
    RunQueries,
    ClaimQueries,
    CompletionQueries,
    SupervisionQueries,
    NodeQueries,
    AlertQueries,
    ExecutionQueries,
    OverviewQueries,
    SqlBase,
):
    """The :class:`~duly.engine.store.base.Store` over SQLAlchemy Core."""
