"""``duly history …``: a customer's execution history, listed a page at a time or exported.

``list`` prints one page (times in the customer's zone, accounts masked) and the cursor of
the next; ``export`` writes every entry of the filter as CSV (streamed, memory flat) or a
PDF statement, with a progress bar on the terminal.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from duly.cli.common import fail, open_system

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from duly.operations.history.models import CustomerInfo, HistoryEntry, HistoryFilter
    from duly.runtime import System

history_app = typer.Typer(
    help="A customer's execution history: list, export as CSV or PDF.", no_args_is_help=True
)

Kinds = Annotated[
    list[str] | None,
    typer.Option("--kind", help="transfer, recurring, reminder or balance_check (repeatable)."),
]
Statuses = Annotated[
    list[str] | None, typer.Option("--status", help="Only this status (repeatable).")
]
FromDay = Annotated[
    str | None,
    typer.Option("--from", help="Scheduled on or after this day, YYYY-MM-DD (customer's zone)."),
]
ToDay = Annotated[
    str | None,
    typer.Option("--to", help="Scheduled on or before this day, YYYY-MM-DD (customer's zone)."),
]
Account = Annotated[str | None, typer.Option("--account", help="Paid from or to this account.")]
Currency = Annotated[str | None, typer.Option("--currency", help="Only this currency.")]
MinAmount = Annotated[
    str | None, typer.Option("--min-amount", help="At least this decimal amount.")
]
MaxAmount = Annotated[str | None, typer.Option("--max-amount", help="At most this decimal amount.")]


def _day(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{flag} {text!r} is not YYYY-MM-DD")


def _amount(text: str | None, flag: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        fail(f"{flag} {text!r} is not a decimal amount")
    if not value.is_finite():
        fail(f"{flag} {text!r} is not a decimal amount")
    return value


def _filter(
    who: CustomerInfo, kinds: list[str] | None, statuses: list[str] | None,
    first: date | None, last: date | None, account: str | None, currency: str | None,
    low: Decimal | None, high: Decimal | None,
) -> HistoryFilter:  # fmt: skip
    from duly.operations.history.models import KINDS, HistoryFilter
    from duly.operations.history.service import check_filter, local_range

    if first and last and first > last:
        fail("--from is after --to")
    since, until = local_range(who.timezone, first, last)
    flt = HistoryFilter(
        customer_id=who.id, kinds=tuple(kinds) if kinds else KINDS,
        statuses=tuple(statuses) if statuses else None, since=since, until=until,
        account_id=account, currency=currency.upper() if currency else None,
        amount_min=low, amount_max=high,
    )  # fmt: skip
    check_filter(flt)
    return flt


def _customer(system: System, customer_id: int) -> CustomerInfo:
    from duly.operations.history.service import customer_info

    return customer_info(system.store.engine, customer_id)


@history_app.command("list")
def history_list(
    customer: Annotated[int, typer.Argument(help="The customer's id.", min=1)],
    kind: Kinds = None,
    status: Statuses = None,
    from_day: FromDay = None,
    to_day: ToDay = None,
    account: Account = None,
    currency: Currency = None,
    min_amount: MinAmount = None,
    max_amount: MaxAmount = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Entries per page.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="The next page's cursor.")] = None,
) -> None:
    """One page of a customer's history, newest first; prints the next page's cursor."""
    from rich.console import Console
    from rich.table import Table

    from duly.operations.errors import OperationError
    from duly.operations.history.service import history

    first, last = _day(from_day, "--from"), _day(to_day, "--to")
    low, high = _amount(min_amount, "--min-amount"), _amount(max_amount, "--max-amount")
    with open_system() as system:
        try:
            who = _customer(system, customer)
            flt = _filter(who, kind, status, first, last, account, currency, low, high)
            page = history(system.store.engine, flt, limit=limit, cursor=cursor)
        except OperationError as exc:
            fail(str(exc))
    table = Table("id", "scheduled", "kind", "occurrence", "amount", "counterparty", "status",
                  "tries", "finished", "failure")  # fmt: skip
    for e in page.entries:
        amount = f"{e.amount:f} {e.currency}" if e.amount is not None else "-"
        failure = f"{e.failure_code}: {e.suggested_action}" if e.failure_code else "-"
        table.add_row(
            e.id, e.scheduled_at.isoformat(), e.kind, e.occurrence, amount,
            e.counterparty or "-", e.status, str(e.attempts),
            e.finished_at.isoformat() if e.finished_at else "-", failure,
        )  # fmt: skip
    Console(width=220).print(table)
    if not page.entries:
        typer.echo(f"no history for customer {who.id} with these filters")
    if page.next_cursor:
        typer.echo(f"next page: --cursor {page.next_cursor}")


@history_app.command("export")
def history_export(
    customer: Annotated[int, typer.Argument(help="The customer's id.", min=1)],
    output: Annotated[Path, typer.Option("-o", "--output", help="The file to write.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or pdf.")] = "csv",
    kind: Kinds = None,
    status: Statuses = None,
    from_day: FromDay = None,
    to_day: ToDay = None,
    account: Account = None,
    currency: Currency = None,
    min_amount: MinAmount = None,
    max_amount: MaxAmount = None,
) -> None:
    """Write the customer's history (every entry of the filters) as CSV or a PDF statement."""
    from duly.operations.errors import OperationError
    from duly.operations.history.service import count

    if fmt not in ("csv", "pdf"):
        fail(f"--format {fmt!r}: use csv or pdf")
    first, last = _day(from_day, "--from"), _day(to_day, "--to")
    low, high = _amount(min_amount, "--min-amount"), _amount(max_amount, "--max-amount")
    with open_system() as system:
        try:
            who = _customer(system, customer)
            flt = _filter(who, kind, status, first, last, account, currency, low, high)
            total = count(system.store.engine, flt)
            written = _write(system, who, flt, fmt, output, total, (first, last))
        except OperationError as exc:
            output.unlink(missing_ok=True)
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote {written} entries of customer {who.id} to {output} ({fmt})")


def _write(
    system: System, who: CustomerInfo, flt: HistoryFilter, fmt: str, output: Path, total: int,
    period: tuple[date | None, date | None],
) -> int:  # fmt: skip
    """Write the export with a progress bar (on a terminal); the number of entries written."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from duly.operations.history.export import csv_chunks
    from duly.operations.history.service import entries

    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), transient=True, disable=total < 1000,
    )  # fmt: skip
    rows = 0
    with progress:
        task = progress.add_task(f"history {fmt}", total=total)

        def counted() -> Iterator[HistoryEntry]:
            nonlocal rows
            for entry in entries(system.store.engine, flt):
                rows += 1
                if rows % 500 == 0:
                    progress.update(task, completed=rows)
                yield entry

        if fmt == "csv":
            # a temporary file renamed at the end: a failed export leaves no half file
            partial = output.with_name(output.name + ".partial")
            with partial.open("w", encoding="utf-8", newline="") as out:
                for chunk in csv_chunks(counted()):
                    out.write(chunk)
            partial.replace(output)
        else:
            output.write_bytes(_pdf(system, who, counted(), period))
        progress.update(task, completed=rows)
    return rows


def _pdf(
    system: System, who: CustomerInfo, rows: Iterable[HistoryEntry],
    period: tuple[date | None, date | None],
) -> bytes:  # fmt: skip
    from zoneinfo import ZoneInfo

    from duly.operations.history.statement import Statement, StatementStyle, render_statement

    h = system.settings.history
    now = system.clock.now().astimezone(ZoneInfo(who.timezone))
    statement = Statement(who, period[0], period[1], now)
    style = StatementStyle(h.bank_name, h.pdf_font, h.pdf_font_bold)
    return render_statement(statement, rows, style)
