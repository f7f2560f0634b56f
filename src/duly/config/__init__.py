"""Settings: ``duly.yaml`` plus ``DULY_*`` environment overrides, validated.

Where settings come from, highest priority first:

1. environment variables ``DULY_<KEY>``, nested keys joined by ``__``
   (``DULY_JOBS__DAILY_BALANCE_CHECK__SCHEDULE_TIME=23:30``); list and mapping values
   are JSON (``DULY_ENGINE__QUEUES='["a","b"]'``);
2. the YAML file: the path given to :func:`load_settings` (the CLI's ``--config``), else
   the file named by ``DULY_CONFIG``, else ``./duly.yaml`` if it exists; a file that is
   named explicitly but does not exist is an error;
3. the defaults below (embedded SQLite ``./duly.db``, UTC, nightly balance check 22:00).

Every bad value becomes one :class:`ConfigError` whose ``str()`` is a single line naming
the key path, the value, what is allowed and, where known, which variable or file the
value came from. Nothing here prints or exits; the CLI does that.

``Settings()`` built directly (in tests or by a library user) reads neither the
environment nor any file: it is the defaults plus the keyword arguments given.

One module per area (:mod:`~duly.config.engine`, :mod:`~duly.config.database`,
:mod:`~duly.config.notify`, :mod:`~duly.config.balance_check`, :mod:`~duly.config.api`,
:mod:`~duly.config.schedules`), the root model in :mod:`~duly.config.settings`, the file and
environment sources in :mod:`~duly.config.loader`, and the wording of errors in
:mod:`~duly.config.errors` and :mod:`~duly.config.problems`.
"""

from __future__ import annotations

from duly.config.api import ApiSettings
from duly.config.audit import AuditSettings
from duly.config.balance_check import BalanceCheckSettings, JobsSettings
from duly.config.database import DatabaseSettings, redact_url
from duly.config.engine import EngineSettings, LoggingSettings
from duly.config.errors import ConfigError, ConfigProblem
from duly.config.history import HistorySettings
from duly.config.loader import load_settings, settings_from_cli
from duly.config.notify import DeliverySettings, EmailSettings, NotifySettings, ReminderSettings
from duly.config.schedules import ScheduleSettings
from duly.config.settings import Settings

__all__ = [
    "ApiSettings",
    "AuditSettings",
    "BalanceCheckSettings",
    "ConfigError",
    "ConfigProblem",
    "DatabaseSettings",
    "DeliverySettings",
    "EmailSettings",
    "EngineSettings",
    "HistorySettings",
    "JobsSettings",
    "LoggingSettings",
    "NotifySettings",
    "ReminderSettings",
    "ScheduleSettings",
    "Settings",
    "load_settings",
    "redact_url",
    "settings_from_cli",
]
