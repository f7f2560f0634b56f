"""Financial operations on the engine: scheduled transfers, recurring payments, history.

Import :data:`operations_registry` (the jobs) and the services::

    from duly.operations import RecurringPayments, ScheduledTransfers, operations_registry
"""

from __future__ import annotations

from duly.operations.errors import (
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    OperationError,
    StateConflict,
)
from duly.operations.jobs import operations_registry
from duly.operations.policy import FailurePolicy
from duly.operations.recurring.models import NewRecurringPayment
from duly.operations.recurring.service import RecurringPayments
from duly.operations.sweep import sweep_schedule
from duly.operations.transfers.models import NewTransfer
from duly.operations.transfers.service import ScheduledTransfers

__all__ = [
    "FailurePolicy",
    "IdempotencyConflict",
    "InvalidRequest",
    "NewRecurringPayment",
    "NewTransfer",
    "NotFound",
    "OperationError",
    "RecurringPayments",
    "ScheduledTransfers",
    "StateConflict",
    "operations_registry",
    "sweep_schedule",
]
