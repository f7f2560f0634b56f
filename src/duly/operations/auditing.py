"""What the money operations tell the audit trail: small details, accounts masked, no balance.

Every service records its change with :func:`duly.audit.record` on the connection whose
transaction makes it, so the API and the CLI, which both call the services, record it once.
These helpers build the details the operations share: the money terms of a movement (an
amount as a decimal string with its currency, the two accounts masked) and caller-chosen
keys with any account number in them masked.
"""

from __future__ import annotations

from typing import Any

from duly.audit import AuditEntry
from duly.banking.money import from_minor, mask_account, mask_accounts_in
from duly.operations.execution.models import Kind, Target

__all__ = ["money_terms", "safe_key", "target_entry"]


def money_terms(
    from_account: str, to_account: str, amount_minor: int, currency: str
) -> dict[str, Any]:
    """What a movement moves, from where to where: the amount and the masked accounts."""
    return {
        "amount": str(from_minor(amount_minor, currency)),
        "currency": currency,
        "from_account": mask_account(from_account),
        "to_account": mask_account(to_account),
    }


def safe_key(key: str, from_account: str, to_account: str) -> str:
    """A caller's key (idempotency key, reference) with the movement's account numbers masked."""
    return mask_accounts_in(key, from_account, to_account)


def target_entry(kind: Kind, target: Target, verb: str, **details: Any) -> AuditEntry:
    """The event ``<aggregate>.<verb>`` of an attempt on ``target``, with its money terms."""
    terms = money_terms(
        target.from_account, target.to_account, target.amount_minor, target.currency
    )
    reference = safe_key(target.transfer_key, target.from_account, target.to_account)
    return AuditEntry(
        f"{kind.aggregate}.{verb}",
        kind.aggregate,
        target.ref_id,
        {**terms, "bank": target.bank, "reference": reference, **details},
    )
