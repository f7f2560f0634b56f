"""The failure policy of a transfer or recurring payment (finance-rules.md §4, checklist 20–21).

Only transient failures are retried; a retry comes ``retry_every`` after the failed
attempt; there are never more than ``max_attempts`` attempts, and never one later than
``retry_window`` after the operation's scheduled instant. A terminal failure stops at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from duly.banking.errors import is_transient

__all__ = ["ACH_REINITIATION_WINDOW", "FailurePolicy", "ach_reinitiation"]


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """When a failed attempt gets another.

    :param max_attempts: total attempts, the first included (1: never retry).
    :param retry_every: wait after a failed attempt.
    :param retry_window: no attempt starts later than this after the scheduled instant.
    """

    max_attempts: int = 3
    retry_every: timedelta = timedelta(hours=4)
    retry_window: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 100:
            raise ValueError("max_attempts must be 1–100")
        if self.retry_every <= timedelta(0) or self.retry_window < timedelta(0):
            raise ValueError("retry_every must be > 0 and retry_window ≥ 0")

    @classmethod
    def from_seconds(cls, max_attempts: int, every: int, window: int) -> FailurePolicy:
        """The policy stored as (max_attempts, retry_every_seconds, retry_window_seconds)."""
        return cls(max_attempts, timedelta(seconds=every), timedelta(seconds=window))

    def next_attempt(
        self,
        *,
        code: str,
        transient: bool | None,
        attempts_made: int,
        failed_at: datetime,
        scheduled_at: datetime,
    ) -> datetime | None:
        """When to try again after attempt ``attempts_made`` failed with ``code``, or ``None`` (final).

        ``transient=None`` takes the code's class from the taxonomy.
        """
        retryable = is_transient(code) if transient is None else transient
        if not retryable or attempts_made >= self.max_attempts:
            return None
        at = failed_at + self.retry_every
        return at if at <= scheduled_at + self.retry_window else None


#: Nacha: a returned debit may be reinitiated within this long of the original settlement.
ACH_REINITIATION_WINDOW = timedelta(days=180)
#: Return codes that may be reinitiated without a new authorisation (insufficient /
#: uncollected funds), and how many times (3 presentments in all).
_ACH_REINITIABLE = frozenset({"R01", "R09"})
_ACH_MAX_REINITIATIONS = 2


def ach_reinitiation(
    return_code: str,
    *,
    reinitiations_made: int,
    original_settlement: datetime,
    now: datetime,
    new_authorization: bool = False,
) -> bool:
    """Whether a returned ACH debit may be presented again now (finance-rules.md §4, checklist 21).

    * ``R01`` (insufficient funds) and ``R09`` (uncollected funds): at most 2
      reinitiations (3 presentments) within 180 days of the original settlement;
    * ``R08`` (stop payment): only with a new authorisation (and then it is a new entry,
      within the same limits);
    * ``R07`` (authorisation revoked): never;
    * any other code (``R02`` account closed, ``R03`` no account…): never automatically;
      only once the cause is fixed, which is a new entry, not a reinitiation.
    """
    code = return_code.strip().upper()
    if code == "R07":
        return False
    if code == "R08":
        if not new_authorization:
            return False
    elif code not in _ACH_REINITIABLE:
        return False
    if reinitiations_made >= _ACH_MAX_REINITIATIONS:
        return False
    return now - original_settlement <= ACH_REINITIATION_WINDOW
