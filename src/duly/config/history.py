"""Settings of the customer execution history: how long it is kept, what its statements show."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEJAVU_SANS", "HistorySettings"]

#: Debian's ``fonts-dejavu-core``: a TrueType font covering Latin, Greek and Cyrillic names.
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


class HistorySettings(BaseModel):
    """Retention of operation history and the PDF statement's bank name and font."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    retention_days: Annotated[int, Field(ge=1)] = 2557
    """Finished operations (transfers, occurrences, reminders, balance checks) scheduled
    longer ago than this (7 years by default) are pruned by ``history.prune``."""
    bank_name: Annotated[str, Field(min_length=1, max_length=120)] = "duly bank"
    """The bank's name at the top of every PDF statement."""
    pdf_font: Path = DEJAVU_SANS
    """A TrueType font for PDF statements; it must cover the customers' names."""
    pdf_font_bold: Path | None = None
    """The bold face for headings; ``None``: the regular face's ``-Bold`` sibling if present."""
