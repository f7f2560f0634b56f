"""A customer's execution history: transfers, recurring occurrences, reminders sent, balance checks.

Each entry has what a customer (or the API, CSV and PDF exports built on it) needs: what it
was, when it was scheduled, started and finished (in the customer's time zone), its status,
the amount and masked counterparty, and — if it failed — the taxonomy code, its description
and the suggested action (from ``error_codes``).

The history is read from the operations' own tables, one keyset query per kind, merged:
each query reads at most a page plus one from its ``(customer_id, time, id)`` index, so a
page costs the same at any depth and any history size. Entries are ordered newest scheduled
first, then by kind, then by id; a cursor is the last entry's key, so a page never repeats
or skips an entry while new ones are added.
"""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Connection,
    Date,
    Engine,
    Integer,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    tuple_,
    union_all,
)

from duly.banking.money import MINOR_UNITS, from_minor, mask_account
from duly.banking.schema import customer_pii, customers, error_codes
from duly.engine.store.types import IdType, UTCDateTime
from duly.notify.schema import deliveries, reminders
from duly.operations.balance_check.models import balance_check_results
from duly.operations.errors import InvalidRequest, NotFound
from duly.operations.execution.models import payment_attempts
from duly.operations.history.models import (
    KINDS,
    MAX_LIMIT,
    CustomerInfo,
    HistoryEntry,
    HistoryFilter,
    HistoryPage,
)
from duly.operations.recurring.models import recurring_occurrences, recurring_payments
from duly.operations.transfers.models import scheduled_transfers

__all__ = ["STATUSES", "count", "customer_info", "entries", "history", "local_range"]

#: Position of each kind among entries scheduled at the same instant.
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}

#: A balance check's outcome as the history shows it (the table keeps PASS/FAIL/ERROR).
_CHECK_STATUS = {"PASS": "passed", "FAIL": "below_minimum", "ERROR": "error"}

#: Every status an entry can have, by kind.
STATUSES: dict[str, tuple[str, ...]] = {
    "transfer": ("scheduled", "executing", "executed", "failed", "cancelled"),
    "recurring": ("scheduled", "executing", "retrying", "executed", "failed", "skipped",
                  "cancelled"),
    "reminder": ("pending", "sending", "sent", "failed", "cancelled"),
    "balance_check": tuple(_CHECK_STATUS.values()),
}  # fmt: skip

#: Statuses whose error code is the entry's failure (a retrying one shows why it waits).
_FAILING = frozenset({"failed", "retrying", "executing", "skipped", "error"})

Key = tuple[datetime, int, int]


def customer_info(engine: Engine, customer_id: int) -> CustomerInfo:
    """The customer whose history is asked for.

    :raises NotFound: there is no such customer.
    """
    c, pii = customers, customer_pii
    query = (
        select(c.c.id, c.c.external_id, c.c.timezone, pii.c.name)
        .outerjoin(pii, pii.c.customer_id == c.c.id)
        .where(c.c.id == customer_id)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no customer {customer_id}")
    return CustomerInfo(int(row.id), row.external_id, row.name, row.timezone)


def history(
    engine: Engine, flt: HistoryFilter, *, limit: int = 50, cursor: str | None = None
) -> HistoryPage:
    """One page of the customer's history, newest scheduled first.

    :raises InvalidRequest: a bad cursor, kind, status, range or limit.
    :raises NotFound: there is no such customer.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1–{MAX_LIMIT}")
    check_filter(flt)
    who = customer_info(engine, flt.customer_id)
    after = _decode(cursor) if cursor else None
    page, more = _page(engine, flt, after, limit, ZoneInfo(who.timezone))
    next_cursor = _encode(_key(page[-1][0])) if more and page else None
    return HistoryPage(tuple(e for _, e in page), next_cursor)


def entries(engine: Engine, flt: HistoryFilter, *, chunk: int = 1000) -> Iterator[HistoryEntry]:
    """Every entry of the filter, newest first, read ``chunk`` at a time (for exports).

    Each kind is read on its own, ``chunk`` rows per short read from its index, and the
    kinds are merged here: unlike :func:`history`'s pages, which ask every kind for a
    whole page to keep one, no row is read twice or thrown away. An export of any size
    holds a chunk per kind in memory and no transaction open; entries added meanwhile are
    neither repeated nor skipped.

    :raises InvalidRequest: a bad filter. :raises NotFound: no such customer.
    """
    check_filter(flt)
    tz = ZoneInfo(customer_info(engine, flt.customer_id).timezone)
    streams = [_kind_entries(engine, flt, kind, chunk, tz) for kind in flt.kinds]
    for _, entry in heapq.merge(*streams, key=_first, reverse=True):
        yield entry


def _kind_entries(
    engine: Engine, flt: HistoryFilter, kind: str, chunk: int, tz: ZoneInfo
) -> Iterator[tuple[Key, HistoryEntry]]:
    """One kind's entries with their keys, newest first, ``chunk`` per read."""
    after: Key | None = None
    catalog: dict[str, Any] = {}
    while True:
        query = _SOURCES[kind](flt, after, chunk)
        if query is None:  # the filter rules this kind out
            return
        with engine.connect() as conn:
            rows = conn.execute(query).all()
            unknown = {r.error_code for r in rows if r.error_code} - catalog.keys()
            catalog |= _catalog(conn, unknown)
        for row in rows:
            yield _key(row), _entry(row, catalog, tz)
        if len(rows) < chunk:
            return
        after = _key(rows[-1])


def _first(pair: tuple[Key, HistoryEntry]) -> Key:
    return pair[0]


def count(engine: Engine, flt: HistoryFilter) -> int:
    """How many entries the filter selects (an export's progress bar)."""
    check_filter(flt)
    total = 0
    with engine.connect() as conn:
        for kind in flt.kinds:
            query = _SOURCES[kind](flt, None, None)
            if query is not None:
                total += int(
                    conn.execute(
                        select(func.count()).select_from(query.order_by(None).subquery())
                    ).scalar_one()
                )
    return total


def local_range(
    timezone: str, first_day: date | None, last_day: date | None
) -> tuple[datetime | None, datetime | None]:
    """``since``/``until`` instants of the customer-local days ``first_day``…``last_day`` (inclusive)."""
    tz = ZoneInfo(timezone)
    since = datetime.combine(first_day, time(0), tz).astimezone(UTC) if first_day else None
    until = (
        datetime.combine(last_day + timedelta(days=1), time(0), tz).astimezone(UTC)
        if last_day
        else None
    )
    return since, until


def check_filter(flt: HistoryFilter) -> None:
    """Refuse a filter that cannot mean anything, naming the bad part.

    :raises InvalidRequest: an unknown kind or status, an empty or inverted range.
    """
    unknown = set(flt.kinds) - set(KINDS)
    if unknown or not flt.kinds:
        raise InvalidRequest(f"kind: unknown {', '.join(sorted(unknown))}; use {', '.join(KINDS)}")
    if flt.statuses is not None:
        known = {s for kind in flt.kinds for s in STATUSES[kind]}
        bad = set(flt.statuses) - known
        if bad or not flt.statuses:
            raise InvalidRequest(
                f"status: unknown {', '.join(sorted(bad))}; use {', '.join(sorted(known))}"
            )
    if flt.since is not None and flt.until is not None and flt.since >= flt.until:
        raise InvalidRequest("the date range is empty: its start is not before its end")
    for name, bound in (("amount_min", flt.amount_min), ("amount_max", flt.amount_max)):
        if bound is not None and (not bound.is_finite() or bound < 0):
            raise InvalidRequest(f"{name} must be a decimal ≥ 0")
    if (
        flt.amount_min is not None
        and flt.amount_max is not None
        and flt.amount_min > flt.amount_max
    ):
        raise InvalidRequest("amount_min is above amount_max")
    if flt.currency is not None and flt.currency not in MINOR_UNITS:
        raise InvalidRequest(f"currency: unknown {flt.currency!r}")


# -- one page over every kind -------------------------------------------------------------


def _page(
    engine: Engine, flt: HistoryFilter, after: Key | None, limit: int, tz: ZoneInfo
) -> tuple[list[tuple[Any, HistoryEntry]], bool]:
    """Up to ``limit`` entries after ``after`` and whether more follow.

    One statement: each kind's keyset query (a page plus one, from its index) in a
    ``UNION ALL``, merged and cut by the database, so only the page crosses the wire.
    """
    branches = [q for kind in flt.kinds if (q := _SOURCES[kind](flt, after, limit + 1)) is not None]
    if not branches:
        return [], False
    wrapped = [select(*b.subquery().c) for b in branches]  # SQLite: no LIMIT inside a compound
    merged = union_all(*wrapped).subquery() if len(wrapped) > 1 else branches[0].subquery()
    query = (
        select(merged)
        .order_by(merged.c.at.desc(), merged.c.rank.desc(), merged.c.op_id.desc())
        .limit(limit + 1)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        page, more = rows[:limit], len(rows) > limit
        catalog = _catalog(conn, {r.error_code for r in page if r.error_code})
    return [(r, _entry(r, catalog, tz)) for r in page], more


def _key(row: Any) -> Key:
    return row.at, int(row.rank), int(row.op_id)


def _keyset(at: Any, op_id: Any, kind: str, after: Key | None) -> Any:
    """Rows strictly after the cursor in (time desc, rank desc, id desc) order."""
    if after is None:
        return None
    when, rank, last_id = after
    mine = _RANK[kind]
    bound = literal(when, UTCDateTime())
    if mine > rank:
        return at < bound
    if mine < rank:
        return at <= bound
    # a row comparison, so the (customer, time, id) index bounds the scan at any depth
    return tuple_(at, op_id) < tuple_(bound, literal(last_id))


def _range(at: Any, flt: HistoryFilter) -> list[Any]:
    conds = []
    if flt.since is not None:
        conds.append(at >= flt.since)
    if flt.until is not None:
        conds.append(at < flt.until)
    return conds


def _money(
    amount: Any, currency: Any, from_account: Any, to_account: Any, flt: HistoryFilter
) -> list[Any]:
    """The account, currency and amount conditions; amounts compared in minor units per currency."""
    conds = []
    if flt.account_id is not None:
        conds.append(or_(from_account == flt.account_id, to_account == flt.account_id))
    if flt.currency is not None:
        conds.append(currency == flt.currency)
    if flt.amount_min is None and flt.amount_max is None:
        return conds
    by_exponent: dict[int, list[str]] = {}
    for code, exponent in MINOR_UNITS.items():
        if flt.currency is None or code == flt.currency:
            by_exponent.setdefault(exponent, []).append(code)
    alternatives = []
    for exponent, codes in sorted(by_exponent.items()):
        parts = [currency.in_(codes)]
        if flt.amount_min is not None:
            low = flt.amount_min.scaleb(exponent).to_integral_value(ROUND_CEILING)
            parts.append(amount >= int(low))
        if flt.amount_max is not None:
            high = flt.amount_max.scaleb(exponent).to_integral_value(ROUND_FLOOR)
            parts.append(amount <= int(high))
        alternatives.append(and_(*parts))
    conds.append(or_(*alternatives))
    return conds


def _statuses(
    column: Any, flt: HistoryFilter, kind: str, stored: dict[str, str] | None = None
) -> list[Any]:
    if flt.statuses is None:
        return []
    mine = [s for s in flt.statuses if s in STATUSES[kind]]
    if stored is not None:
        back = {shown: raw for raw, shown in stored.items()}
        mine = [back[s] for s in mine]
    return [column.in_(mine)]


def _none(type_: Any) -> Any:
    return cast(null(), type_)


def _shape(kind: str, **columns: Any) -> list[Any]:
    """The columns every kind's query answers, in one order (a ``UNION ALL`` needs it)."""
    return [
        literal(_RANK[kind], Integer()).label("rank"),
        *(columns[name].label(name) for name in _SHAPE),
    ]


_SHAPE = (
    "op_id", "at", "payment_id", "occ_date", "occ_note", "reference", "memo", "from_account",
    "to_account", "amount_minor", "currency", "status", "attempts", "started_at", "finished_at",
    "error_code", "run_id",
)  # fmt: skip


def _first_start(kind: str, ref_id: Any) -> Any:
    """When the payment's first attempt started (one index lookup per row of the page)."""
    a = payment_attempts
    return (
        select(func.min(a.c.started_at))
        .where(a.c.kind == kind, a.c.ref_id == ref_id)
        .scalar_subquery()
    )


def _ordered(query: Any, at: Any, op_id: Any, limit: int | None) -> Any:
    return query.order_by(at.desc(), op_id.desc()).limit(limit)


def _transfers(flt: HistoryFilter, after: Key | None, limit: int | None) -> Any:
    if flt.payment_id is not None:
        return None
    t = scheduled_transfers
    conds = [t.c.customer_id == flt.customer_id, *_range(t.c.execute_at, flt)]
    conds += _statuses(t.c.status, flt, "transfer")
    conds += _money(t.c.amount_minor, t.c.currency, t.c.from_account, t.c.to_account, flt)
    page = _keyset(t.c.execute_at, t.c.id, "transfer", after)
    if page is not None:
        conds.append(page)
    finished = case(
        (t.c.status == "executed", t.c.executed_at),
        (t.c.status == "cancelled", t.c.cancelled_at),
        (t.c.status == "failed", t.c.updated_at),
        else_=_none(UTCDateTime()),
    )
    columns = _shape(
        "transfer", op_id=t.c.id, at=t.c.execute_at, payment_id=_none(IdType),
        occ_date=t.c.local_date, occ_note=_none(String()), reference=t.c.transfer_key,
        memo=t.c.memo, from_account=t.c.from_account, to_account=t.c.to_account,
        amount_minor=t.c.amount_minor, currency=t.c.currency, status=t.c.status,
        attempts=t.c.attempts, started_at=_first_start("transfer", t.c.id),
        finished_at=finished, error_code=t.c.error_code, run_id=t.c.run_id,
    )  # fmt: skip
    return _ordered(select(*columns).where(*conds), t.c.execute_at, t.c.id, limit)


def _occurrences(flt: HistoryFilter, after: Key | None, limit: int | None) -> Any:
    o, p = recurring_occurrences, recurring_payments
    conds = [o.c.customer_id == flt.customer_id, *_range(o.c.execute_at, flt)]
    conds += _statuses(o.c.status, flt, "recurring")
    conds += _money(p.c.amount_minor, p.c.currency, p.c.from_account, p.c.to_account, flt)
    if flt.payment_id is not None:
        conds.append(o.c.payment_id == flt.payment_id)
    page = _keyset(o.c.execute_at, o.c.id, "recurring", after)
    if page is not None:
        conds.append(page)
    finished = case(
        (o.c.status == "executed", o.c.executed_at),
        (o.c.status.in_(("failed", "skipped", "cancelled")), o.c.updated_at),
        else_=_none(UTCDateTime()),
    )
    columns = _shape(
        "recurring", op_id=o.c.id, at=o.c.execute_at, payment_id=o.c.payment_id,
        occ_date=o.c.unadjusted_date, occ_note=_none(String()), reference=o.c.transfer_key,
        memo=p.c.memo, from_account=p.c.from_account, to_account=p.c.to_account,
        amount_minor=p.c.amount_minor, currency=p.c.currency, status=o.c.status,
        attempts=o.c.attempts, started_at=_first_start("occurrence", o.c.id),
        finished_at=finished, error_code=o.c.error_code, run_id=o.c.run_id,
    )  # fmt: skip
    query = select(*columns).join(p, p.c.id == o.c.payment_id).where(*conds)
    return _ordered(query, o.c.execute_at, o.c.id, limit)


def _reminders(flt: HistoryFilter, after: Key | None, limit: int | None) -> Any:
    """Reminders handed to a channel (those with a delivery), with the payment reminded of."""
    if flt.payment_id is not None:
        return None
    r, d, t, p = reminders, deliveries, scheduled_transfers, recurring_payments
    amount = func.coalesce(t.c.amount_minor, p.c.amount_minor)
    currency = func.coalesce(t.c.currency, p.c.currency)
    from_account = func.coalesce(t.c.from_account, p.c.from_account)
    to_account = func.coalesce(t.c.to_account, p.c.to_account)
    conds = [r.c.customer_id == flt.customer_id, r.c.delivery_id.is_not(None)]
    conds += _range(r.c.send_at, flt)
    conds += _statuses(d.c.status, flt, "reminder")
    conds += _money(amount, currency, from_account, to_account, flt)
    page = _keyset(r.c.send_at, r.c.id, "reminder", after)
    if page is not None:
        conds.append(page)
    finished = case(
        (d.c.status == "sent", d.c.sent_at),
        (d.c.status.in_(("failed", "cancelled")), d.c.updated_at),
        else_=_none(UTCDateTime()),
    )
    columns = _shape(
        "reminder", op_id=r.c.id, at=r.c.send_at,
        payment_id=case((r.c.kind == "occurrence", r.c.ref_id), else_=_none(IdType)),
        occ_date=_none(Date()), occ_note=r.c.offset + " before, " + r.c.channel,
        reference=r.c.occurrence_key, memo=func.coalesce(t.c.memo, p.c.memo),
        from_account=from_account, to_account=to_account, amount_minor=amount,
        currency=currency, status=d.c.status, attempts=d.c.attempts, started_at=d.c.created_at,
        finished_at=finished, error_code=_none(String()), run_id=_none(IdType),
    )  # fmt: skip
    query = (
        select(*columns)
        .select_from(r)
        .join(d, d.c.id == r.c.delivery_id)
        .outerjoin(t, and_(r.c.kind == "transfer", t.c.id == r.c.ref_id))
        .outerjoin(p, and_(r.c.kind == "occurrence", p.c.id == r.c.ref_id))
        .where(*conds)
    )
    return _ordered(query, r.c.send_at, r.c.id, limit)


def _checks(flt: HistoryFilter, after: Key | None, limit: int | None) -> Any:
    if flt.payment_id is not None or flt.needs_money:
        return None
    b = balance_check_results
    conds = [b.c.customer_id == flt.customer_id, *_range(b.c.checked_at, flt)]
    conds += _statuses(b.c.result, flt, "balance_check", _CHECK_STATUS)
    page = _keyset(b.c.checked_at, b.c.id, "balance_check", after)
    if page is not None:
        conds.append(page)
    columns = _shape(
        "balance_check", op_id=b.c.id, at=b.c.checked_at, payment_id=_none(IdType),
        occ_date=b.c.business_date, occ_note=_none(String()), reference=_none(String()),
        memo=_none(String()), from_account=_none(String()), to_account=_none(String()),
        amount_minor=_none(BigInteger()), currency=_none(String()), status=b.c.result,
        attempts=b.c.attempts, started_at=b.c.checked_at, finished_at=b.c.checked_at,
        error_code=b.c.error_code, run_id=b.c.run_id,
    )  # fmt: skip
    return _ordered(select(*columns).where(*conds), b.c.checked_at, b.c.id, limit)


_SOURCES = {
    "transfer": _transfers,
    "recurring": _occurrences,
    "reminder": _reminders,
    "balance_check": _checks,
}


def _catalog(conn: Connection, codes: set[str]) -> dict[str, Any]:
    if not codes:
        return {}
    query = select(error_codes).where(error_codes.c.code.in_(sorted(codes)))
    return {c.code: c for c in conn.execute(query)}


def _local(when: datetime | None, tz: ZoneInfo) -> datetime | None:
    return None if when is None else when.astimezone(tz)


#: Each currency's smallest unit, so a page's amounts skip re-checking the currency code.
_QUANTA = {code: Decimal(1).scaleb(-exponent) for code, exponent in MINOR_UNITS.items()}


def _decimal(minor: int, currency: str) -> Decimal:
    """``from_minor`` for a currency the store already holds (checked when it was written)."""
    quantum = _QUANTA.get(currency)
    if quantum is None:
        return from_minor(minor, currency)
    return (Decimal(minor) * quantum).quantize(quantum)


def _entry(r: Any, catalog: dict[str, Any], tz: ZoneInfo) -> HistoryEntry:
    # Unpacked by position (the order of _shape): a page or an export builds thousands of
    # entries, and a row's attribute look-ups cost more than the rest of the entry.
    (rank, op_id, at, payment_id, occ_date, occ_note, reference, memo, from_account,
     to_account, minor, currency, status, attempts, started_at, finished_at, error_code,
     run_id) = r  # fmt: skip
    kind = KINDS[int(rank)]
    if kind == "balance_check":
        status = _CHECK_STATUS[status]
    failed = status in _FAILING and error_code is not None
    info = catalog.get(error_code) if failed else None
    occurrence = occ_note if occ_date is None else occ_date.isoformat()
    op_id = int(op_id)
    return HistoryEntry(
        kind=kind,
        id=f"{kind}:{op_id}",
        operation_id=op_id,
        payment_id=None if payment_id is None else int(payment_id),
        occurrence=occurrence or "",
        reference=reference,
        description=memo,
        from_account=mask_account(from_account) if from_account else None,
        counterparty=mask_account(to_account) if to_account else None,
        amount=_decimal(int(minor), currency) if minor is not None and currency else None,
        currency=currency,
        status=status,
        scheduled_at=at.astimezone(tz),
        started_at=_local(started_at, tz),
        finished_at=_local(finished_at, tz),
        attempts=int(attempts),
        failure_code=error_code if failed else None,
        failure_reason=info.description if info is not None else None,
        suggested_action=info.suggested_action if info is not None else None,
        run_id=None if run_id is None else int(run_id),
    )


# -- cursors ------------------------------------------------------------------------------


def _encode(key: Key) -> str:
    at, rank, op_id = key
    raw = json.dumps([at.astimezone(UTC).isoformat(), rank, op_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> Key:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, rank, op_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or rank not in _RANK.values() or isinstance(op_id, bool):
            raise ValueError
        if not isinstance(op_id, int) or not 0 <= op_id < 2**63:
            raise ValueError
        return when.astimezone(UTC), int(rank), op_id
    except (ValueError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidRequest("the cursor is not one this history gave out") from None
