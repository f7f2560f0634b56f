"""Settings of the built-in jobs: the nightly balance check."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from duly.config.errors import show_value
from duly.config.fields import IanaZone, NonEmptyStr, check_hhmm, none_is_empty


class BalanceCheckSettings(BaseModel):
    """The nightly premium-customer balance check (job ``daily_balance_check``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    schedule_time: Annotated[str, BeforeValidator(check_hhmm)] = "22:00"
    """Local time of day, ``HH:MM`` (24-hour), in :attr:`timezone`."""
    timezone: IanaZone = "UTC"
    retry_attempts: Annotated[int, Field(ge=0)] = 3
    """Retries of the whole job after a failed attempt."""
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 300.0
    window_minutes: Annotated[int, Field(ge=1)] = 120
    """The job must finish within this many minutes of its start time, or an alert is raised."""
    concurrency: Annotated[int, Field(ge=1, le=500)] = 10
    """Balance reads in flight at once (a batched read of many customers counts as one)."""
    read_batch_size: Annotated[int, Field(ge=1, le=1000)] = 200
    """Customers whose balances are read in one call to the bank (one query on the ledger, one
    request on a bank with a batch endpoint); a failed read is retried for its customer alone."""
    per_call_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    call_retry_delays: Annotated[list[Annotated[float, Field(ge=0)]], Field(max_length=10)] = Field(
        default_factory=lambda: [5.0, 10.0, 20.0]
    )
    """Waits before each retry of one customer's balance read (at most 10 retries)."""
    bank: NonEmptyStr = "ledger"
    """The bank balances are read from: ``ledger`` (built in), ``http`` (``DULY_BANK_HTTP_URL``)."""
    account_rule: Literal["total", "each"] = "total"
    """``total``: the customer's open accounts in the minimum's currency together must reach it;
    ``each``: every one of them must."""
    missed_night_lookback_days: Annotated[int, Field(ge=0, le=366)] = 7
    """How many past nights each run checks for a night that never ran (0: none)."""

    @model_validator(mode="after")
    def _retries_fit_window(self) -> BalanceCheckSettings:
        waited = sum(self.call_retry_delays)
        if waited >= self.window_minutes * 60:
            raise PydanticCustomError(
                "retries_exceed_window",
                "the retry waits add up to {waited} s, which does not fit in "
                "jobs.daily_balance_check.window_minutes ({window} min)",
                {
                    "waited": show_value(waited),
                    "window": self.window_minutes,
                    "at": ("call_retry_delays",),
                    "value": [int(d) if d.is_integer() else d for d in self.call_retry_delays],
                    "related": (("window_minutes",),),
                },
            )
        return self

    @property
    def schedule_clock(self) -> time:
        """:attr:`schedule_time` as a :class:`datetime.time`."""
        hour, minute = self.schedule_time.split(":")
        return time(int(hour), int(minute))


class JobsSettings(BaseModel):
    """Settings of the built-in jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    daily_balance_check: BalanceCheckSettings = Field(default_factory=BalanceCheckSettings)

    _empty_sections = field_validator("daily_balance_check", mode="before")(none_is_empty)
