"""Pure decisions of the balance check: a customer's result, the business date, the schedule."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from duly.banking.catalog import describe
from duly.banking.errors import BankingError, ErrorCode
from duly.banking.port import Balance
from duly.config import BalanceCheckSettings
from duly.engine.batch import ItemError, classify_exception
from duly.engine.store.base import NewSchedule
from duly.operations.balance_check.models import JOB_NAME, SCHEDULE_NAME, Decision, Result

__all__ = ["balance_check_schedule", "business_date_of", "classify", "error_of"]


# --------------------------------------------------------------------------- pure rules


def classify(
    min_balance_minor: int, currency: str, balances: Sequence[Balance], rule: str = "total"
) -> Decision:
    """``PASS`` or ``FAIL`` for balances read against a minimum (pure).

    The balance used is :attr:`Balance.available_minor` (posted minus pending debits); a
    balance equal to the minimum passes.

    :raises BankingError: ``MISSING_DATA`` without any balance, ``INVALID_RESPONSE`` for a
        balance in another currency, ``NEGATIVE_BALANCE`` for one below its overdraft limit.
    """
    if not balances:
        raise BankingError(ErrorCode.MISSING_DATA, f"no open account in {currency}")
    for b in balances:
        if b.currency != currency:
            raise BankingError(
                ErrorCode.INVALID_RESPONSE, "the bank reported a balance in another currency"
            )
        if b.overdraft_limit_minor is not None and b.available_minor < -b.overdraft_limit_minor:
            raise BankingError(
                ErrorCode.NEGATIVE_BALANCE, "a balance is below the account's overdraft limit"
            )
    if rule == "each":
        ok = all(b.available_minor >= min_balance_minor for b in balances)
    else:
        ok = sum(b.available_minor for b in balances) >= min_balance_minor
    return Decision(Result.PASS if ok else Result.FAIL, len(balances))


def business_date_of(instant: datetime, timezone: str) -> date:
    """The business date a check at ``instant`` is for: its local date in ``timezone``."""
    return instant.astimezone(ZoneInfo(timezone)).date()


def error_of(exc: BaseException) -> ItemError:
    """A failed read as an :class:`ItemError`: a banking code, or ``INTERNAL`` with the trace."""
    if isinstance(exc, BankingError):
        code = exc.code if describe(exc.code) is not None else "INTERNAL"
        return ItemError(code, exc.message[:500], exc.transient)
    return classify_exception(exc)


def balance_check_schedule(cfg: BalanceCheckSettings, grace_seconds: int = 60) -> NewSchedule:
    """The system schedule of the check, from its settings (paused when disabled)."""
    return NewSchedule(
        name=SCHEDULE_NAME,
        job_name=JOB_NAME,
        spec=f"daily:{cfg.schedule_time}",
        timezone=cfg.timezone,
        misfire="run_once",
        misfire_grace_seconds=grace_seconds,
        overlap="queue",
        paused=not cfg.enabled,
        source="config",
    )
