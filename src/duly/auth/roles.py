"""The four roles a token can carry."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role", "parse_role"]


class Role(StrEnum):
    """What a token's holder may do.

    * ``admin``: everything, including managing tokens;
    * ``operator``: runs the scheduler day to day (jobs, schedules, runs, alerts, errors);
    * ``auditor``: reads everything and changes nothing;
    * ``channel``: the online-banking backend acting for customers (transfers, recurring
      payments, a customer's history); it sees no operations routes.
    """

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    CHANNEL = "channel"


def parse_role(text: str) -> Role:
    """The role named ``text``.

    :raises ValueError: naming the roles there are, for any other text.
    """
    try:
        return Role(text.strip().lower())
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {text!r}: expected one of {names}") from None
