"""The execution history as a PDF statement a customer can read (fpdf2).

Every page repeats the bank's name, the customer, the period, when it was generated (with
the time zone) and the table's column headings; its foot says "page X of Y". After the
rows come totals per currency and status, and per status. Text is set in a TrueType font
(DejaVu Sans by default) so accented and non-Latin names print as written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from duly.operations.errors import InvalidRequest
from duly.operations.history.models import CustomerInfo, HistoryEntry

__all__ = ["Statement", "StatementStyle", "render_statement"]

_FAMILY = "statement"
_ROW_H = 5.0
_NOTE_H = 4.2


@dataclass(frozen=True, slots=True)
class StatementStyle:
    """The bank's name and the font files a statement is set in."""

    bank_name: str
    font: Path
    font_bold: Path | None = None

    def bold_face(self) -> Path:
        """The bold file: the one configured, else the regular file's ``-Bold`` sibling, else it."""
        if self.font_bold is not None:
            return self.font_bold
        sibling = self.font.with_name(f"{self.font.stem}-Bold{self.font.suffix}")
        return sibling if sibling.is_file() else self.font


@dataclass(frozen=True, slots=True)
class Statement:
    """What a statement is of: whose, which period (customer-local dates), generated when."""

    customer: CustomerInfo
    first_day: date | None
    last_day: date | None
    generated_at: datetime  # aware, in the customer's zone

    def period(self) -> str:
        """The period as printed: both ends, one, or "all records"."""
        if self.first_day and self.last_day:
            return f"{self.first_day.isoformat()} to {self.last_day.isoformat()}"
        if self.first_day:
            return f"from {self.first_day.isoformat()}"
        if self.last_day:
            return f"up to {self.last_day.isoformat()}"
        return "all records"


#: (heading, width in mm, alignment) of each column, on A4 landscape (277 mm inside margins).
_COLUMNS = (
    ("Scheduled", 36.0, "L"),
    ("Kind", 22.0, "L"),
    ("Occurrence", 30.0, "L"),
    ("Description", 55.0, "L"),
    ("Counterparty", 24.0, "L"),
    ("Amount", 30.0, "R"),
    ("Status", 24.0, "L"),
    ("Attempts", 16.0, "R"),
    ("Finished", 40.0, "L"),
)

_KIND_LABEL = {
    "transfer": "transfer",
    "recurring": "recurring",
    "reminder": "reminder",
    "balance_check": "balance check",
}


class _Document(FPDF):
    """A page layout with the statement's heading and column headings on every page."""

    def __init__(self, statement: Statement, style: StatementStyle) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.statement, self.style = statement, style
        self.set_margins(10, 10, 10)
        self.set_auto_page_break(False)  # rows are placed by hand, so none splits
        self.add_font(_FAMILY, "", str(style.font))
        self.add_font(_FAMILY, "B", str(style.bold_face()))
        self.in_table = True

    def header(self) -> None:
        s = self.statement
        self.set_font(_FAMILY, "B", 13)
        self.cell(0, 7, self.style.bank_name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(_FAMILY, "", 9)
        who = f"{s.customer.display_name} (customer {s.customer.id}, {s.customer.external_id})"
        self.cell(0, 5, f"Execution history of {who}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        generated = s.generated_at.strftime("%Y-%m-%d %H:%M %Z (UTC%z)")
        self.cell(0, 5, f"Period: {s.period()}    Generated: {generated}    "
                        f"Times in {s.customer.timezone}",
                  new_x=XPos.LMARGIN, new_y=YPos.NEXT)  # fmt: skip
        self.ln(2)
        if self.in_table:
            self.column_headings()

    def column_headings(self) -> None:
        self.set_font(_FAMILY, "B", 7.5)
        self.set_fill_color(225, 229, 236)
        for heading, width, align in _COLUMNS:
            self.cell(width, 6, heading, border="B", align=align, fill=True)
        self.ln(6)
        self.set_font(_FAMILY, "", 7.5)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(_FAMILY, "", 7.5)
        self.cell(0, 5, f"page {self.page_no()} of {{nb}}", align="C")

    def room_for(self, height: float) -> None:
        """Start a new page (with its headings) unless ``height`` fits above the foot."""
        if self.get_y() + height > self.h - 14:
            self.add_page()

    def fit(self, text: str, width: float) -> str:
        """``text`` shortened with "…" to fit ``width`` mm in the current font."""
        room = width - 1.5
        if self.get_string_width(text) <= room:
            return text
        while text and self.get_string_width(text + "…") > room:
            text = text[: max(len(text) * 9 // 10, len(text) - 8)] if len(text) > 12 else text[:-1]
        return text + "…"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M %z") if value is not None else ""


def _amount(entry: HistoryEntry) -> str:
    if entry.amount is None or entry.currency is None:
        return ""
    return f"{entry.amount:,f} {entry.currency}"


def _cells(entry: HistoryEntry) -> tuple[str, ...]:
    return (
        _when(entry.scheduled_at),
        _KIND_LABEL[entry.kind],
        entry.occurrence,
        entry.description or "",
        entry.counterparty or "",
        _amount(entry),
        entry.status.replace("_", " "),
        str(entry.attempts),
        _when(entry.finished_at),
    )


def _row(pdf: _Document, entry: HistoryEntry) -> None:
    note = None
    if entry.failure_code is not None:
        reason = entry.failure_reason or ""
        action = f" What to do: {entry.suggested_action}" if entry.suggested_action else ""
        note = f"{entry.failure_code}: {reason}{action}"
    pdf.room_for(_ROW_H + (_NOTE_H if note else 0))
    for text, (_, width, align) in zip(_cells(entry), _COLUMNS, strict=True):
        pdf.cell(width, _ROW_H, pdf.fit(text, width), align=align)
    pdf.ln(_ROW_H)
    if note:
        pdf.set_x(pdf.l_margin + _COLUMNS[0][1])
        pdf.set_text_color(150, 30, 30)
        pdf.cell(0, _NOTE_H, pdf.fit(note, pdf.epw - _COLUMNS[0][1]))
        pdf.set_text_color(0, 0, 0)
        pdf.ln(_NOTE_H)


@dataclass
class _Totals:
    by_status: Counter[str]
    by_currency: dict[tuple[str, str], tuple[int, Decimal]]

    def add(self, entry: HistoryEntry) -> None:
        self.by_status[entry.status] += 1
        if entry.amount is not None and entry.currency is not None:
            key = (entry.currency, entry.status)
            count, total = self.by_currency.get(key, (0, Decimal(0)))
            self.by_currency[key] = (count + 1, total + entry.amount)


def _totals(pdf: _Document, totals: _Totals, rows: int) -> None:
    pdf.in_table = False  # pages after the rows carry the heading, not the column headings
    pdf.ln(3)
    pdf.room_for(14)
    pdf.set_font(_FAMILY, "B", 9)
    pdf.cell(0, 6, f"Totals ({rows} entries)", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FAMILY, "B", 7.5)
    for heading, width, align in (("Currency", 30, "L"), ("Status", 40, "L"),
                                  ("Entries", 25, "R"), ("Amount", 45, "R")):  # fmt: skip
        pdf.cell(width, 5, heading, border="B", align=align)
    pdf.ln(5)
    pdf.set_font(_FAMILY, "", 7.5)
    for (currency, status), (count, total) in sorted(totals.by_currency.items()):
        pdf.room_for(_ROW_H)
        pdf.cell(30, _ROW_H, currency)
        pdf.cell(40, _ROW_H, status.replace("_", " "))
        pdf.cell(25, _ROW_H, str(count), align="R")
        pdf.cell(45, _ROW_H, f"{total:,f} {currency}", align="R")
        pdf.ln(_ROW_H)
    pdf.ln(2)
    pdf.room_for(12)
    pdf.set_font(_FAMILY, "B", 7.5)
    pdf.cell(40, 5, "Status", border="B")
    pdf.cell(25, 5, "Entries", border="B", align="R")
    pdf.ln(5)
    pdf.set_font(_FAMILY, "", 7.5)
    for status, count in sorted(totals.by_status.items()):
        pdf.room_for(_ROW_H)
        pdf.cell(40, _ROW_H, status.replace("_", " "))
        pdf.cell(25, _ROW_H, str(count), align="R")
        pdf.ln(_ROW_H)


def render_statement(
    statement: Statement,
    entries: Iterable[HistoryEntry],
    style: StatementStyle,
    *,
    on_row: Callable[[int], None] | None = None,
) -> bytes:
    """The statement as PDF bytes; ``on_row(n)`` is told after every 100 rows (progress).

    :raises InvalidRequest: the font file cannot be read.
    """
    if not style.font.is_file():
        raise InvalidRequest(f"history.pdf_font: no font file at {style.font}")
    pdf = _Document(statement, style)
    pdf.set_title(f"Execution history, customer {statement.customer.id}")
    pdf.set_author(style.bank_name)
    pdf.set_creation_date(statement.generated_at)
    pdf.add_page()
    totals = _Totals(Counter(), {})
    rows = 0
    for entry in entries:
        _row(pdf, entry)
        totals.add(entry)
        rows += 1
        if on_row is not None and rows % 100 == 0:
            on_row(rows)
    if rows == 0:
        pdf.cell(0, 8, "No operations in this period.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _totals(pdf, totals, rows)
    if on_row is not None:
        on_row(rows)
    return bytes(pdf.output())
