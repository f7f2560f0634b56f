"""The engine's tables (SQLAlchemy Core). Alembic migrations create them; see ``duly/migrations``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from duly.engine.store.types import IdType, UTCDateTime

__all__ = ["alerts", "job_executions", "metadata", "nodes", "runs", "schedules"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("job_name", String(200), nullable=False),
    Column("spec", Text, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("calendar", String(32)),
    Column("adjust", String(32), nullable=False, server_default="none"),
    Column("dst_gap", String(16), nullable=False, server_default="shift"),
    Column("dst_repeat", String(16), nullable=False, server_default="first"),
    Column("start_at", UTCDateTime()),
    Column("end_at", UTCDateTime()),
    Column("args", JSON, nullable=False),
    Column("misfire", String(16), nullable=False, server_default="run_once"),
    Column("misfire_grace_seconds", Integer, nullable=False, server_default="60"),
    Column("overlap", String(16), nullable=False, server_default="queue"),
    Column("queue", String(64), nullable=False, server_default="default"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("next_fire_at", UTCDateTime()),
    Column("last_fire_at", UTCDateTime()),
    Column("source", String(16), nullable=False, server_default="api"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # Set when firing found the definition unusable (a spec that no longer parses, a time
    # zone gone from the system): the schedule is not fired again until an upsert or a
    # resume gives it a usable definition, so one bad row cannot stop every other one.
    Column("broken_reason", Text),
    Column("broken_at", UTCDateTime()),
    # "api" once an operator paused or resumed the schedule: upserts of its definition (the
    # configuration file at each start) then leave `paused` as the operator set it.
    Column("paused_set_by", String(16)),
    # A catch-up of late fires larger than one pass takes carries its count from pass to
    # pass here, so run_once runs once and the misfire alert counts every late fire.
    Column("catchup_late", Integer, nullable=False, server_default="0"),
    Column("catchup_missed", Integer, nullable=False, server_default="0"),
    Column("catchup_first_late", UTCDateTime()),
    Column("catchup_last_late", UTCDateTime()),
)
Index(
    "ix_schedules_due",
    schedules.c.next_fire_at,
    postgresql_where=text("NOT paused"),
    sqlite_where=text("NOT paused"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("job_name", String(200), nullable=False),
    Column("schedule_id", IdType, ForeignKey("schedules.id", ondelete="SET NULL")),
    Column("scheduled_for", UTCDateTime(), nullable=False),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("origin", String(16), nullable=False),
    Column("args", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("queue", String(64), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    # Runs sharing a serial key run one at a time, in order (overlap policy "queue").
    Column("serial_key", String(64)),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="1"),
    Column("not_before", UTCDateTime(), nullable=False),
    Column("lease_owner", String(200)),
    Column("lease_expires_at", UTCDateTime()),
    Column("fencing_token", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("window_ends_at", UTCDateTime()),
    Column("result", JSON),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("progress_done", Integer),
    Column("progress_total", Integer),
    Column("start_alerted", Boolean, nullable=False, server_default=text("false")),
    Column("window_alerted", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("schedule_id", "scheduled_for"),
)
_claimable = text("status IN ('queued', 'retrying')")
_active = text("status IN ('queued', 'running', 'retrying')")
Index(
    "ix_runs_claim",
    runs.c.queue,
    runs.c.priority.desc(),
    runs.c.not_before,
    runs.c.id,
    postgresql_where=_claimable,
    sqlite_where=_claimable,
)
# Claims of some jobs only (a node claims its batch jobs apart): one ordered range per job.
Index(
    "ix_runs_claim_job",
    runs.c.queue,
    runs.c.job_name,
    runs.c.priority.desc(),
    runs.c.not_before,
    runs.c.id,
    postgresql_where=_claimable,
    sqlite_where=_claimable,
)
Index(
    "ix_runs_lease",
    runs.c.lease_expires_at,
    postgresql_where=text("status = 'running'"),
    sqlite_where=text("status = 'running'"),
)
Index(
    "ix_runs_active_schedule",
    runs.c.schedule_id,
    runs.c.status,
    postgresql_where=_active,
    sqlite_where=_active,
)
Index(
    "ix_runs_active_serial",
    runs.c.serial_key,
    runs.c.status,
    postgresql_where=_active,
    sqlite_where=_active,
)
Index("ix_runs_job_status", runs.c.job_name, runs.c.status, runs.c.scheduled_for)
Index("ix_runs_status_scheduled", runs.c.status, runs.c.scheduled_for)
# A period of runs (the overview's runs by hour and lateness) and one job's newest runs.
Index("ix_runs_scheduled_for", runs.c.scheduled_for)
Index("ix_runs_job_id", runs.c.job_name, runs.c.id)

job_executions = Table(
    "job_executions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    # The run this attempt belongs to (runs.id); named job_id as the operations contract has it.
    Column("job_id", IdType, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("job_name", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("fencing_token", Integer, nullable=False),
    Column("node", String(200), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime()),
    Column("status", String(16), nullable=False),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("execution_time_ms", Integer),
    UniqueConstraint("job_id", "attempt"),
)
Index("ix_job_executions_started_at", job_executions.c.started_at)
Index("ix_job_executions_job_name_started", job_executions.c.job_name, job_executions.c.started_at)

nodes = Table(
    "nodes",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("hostname", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("roles", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    Column("stopped_at", UTCDateTime()),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(300), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Column("run_id", IdType),
    Column("job_name", String(200)),
    Column("occurrences", Integer, nullable=False, server_default="1"),
    Column("first_raised_at", UTCDateTime(), nullable=False),
    Column("last_raised_at", UTCDateTime(), nullable=False),
    Column("acked_at", UTCDateTime()),
    Column("acked_by", String(200)),
    Column("resolved_at", UTCDateTime()),
    Column("resolved_by", String(200)),
)
_open = text("status <> 'resolved'")
Index("ix_alerts_open_key", alerts.c.dedupe_key, postgresql_where=_open, sqlite_where=_open)
Index("ix_alerts_raised", alerts.c.last_raised_at)
Index("ix_alerts_status_id", alerts.c.status, alerts.c.id)  # the newest alerts of one status
