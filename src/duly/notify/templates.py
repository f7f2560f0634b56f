"""Message templates (Jinja2), per event type and locale.

``templates/<locale>/<name>.subject.txt``, ``<name>.txt`` (plain text), ``<name>.html``
(HTML e-mail, autoescaped) and ``<name>.short.txt`` (SMS and push). A locale without the
template falls back to its language (``de-CH`` → ``de``) and then to the default locale.

Filters, all locale-aware through Babel: ``money(amount_minor, currency)`` (integer minor
units in, never a float), ``when(iso_instant)`` (a date and time in the recipient's
timezone), ``day(iso_date)``, ``account(id)`` (masked to its last four characters).
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import (
    format_currency,
    get_currency_precision,
    get_decimal_symbol,
    get_group_symbol,
)

from duly.banking.money import from_minor, mask_account

__all__ = ["ALL_PARTS", "CHANNEL_PARTS", "Rendered", "TemplateError", "Templates"]

TEMPLATE_DIR = Path(__file__).parent / "templates"


class TemplateError(Exception):
    """No such template, or it failed to render."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A template rendered for one recipient."""

    subject: str
    text: str
    html: str | None
    short: str


@functools.lru_cache(maxsize=256)
def _babel_locale(locale: str) -> str:
    try:
        return str(Locale.parse(locale.replace("-", "_")))
    except (UnknownLocaleError, ValueError):
        return "en"


#: The parts each channel shows (the others are not rendered for it).
CHANNEL_PARTS: dict[str, frozenset[str]] = {
    "email": frozenset({"subject", "text", "html"}),
    "webhook": frozenset({"subject", "text"}),
    "sms": frozenset({"subject", "short"}),
    "push": frozenset({"subject", "short"}),
    "log": frozenset({"subject"}),
}
ALL_PARTS = frozenset({"subject", "text", "html", "short"})


@dataclass(frozen=True, slots=True)
class _Compiled:
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template | None
    short: jinja2.Template | None


class Templates:
    """Renders templates for a locale and timezone.

    Template files are read and compiled once per process (edit them and restart), the
    lookup of a template's locale folder is cached, and the Babel formatters are memoised
    per (value, locale, timezone). ``cache_size`` whole renderings are also kept, keyed by
    (template, locale, timezone, parts, context): a message sent to many recipients with
    the same context (an alert on several routes) renders once.
    """

    def __init__(
        self, directory: Path = TEMPLATE_DIR, default_locale: str = "en", cache_size: int = 4096
    ) -> None:
        self.directory = directory
        self.default_locale = default_locale
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory)),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._folders: dict[tuple[str, str], str | None] = {}
        self._compiled: dict[tuple[str, str], _Compiled | None] = {}
        self._rendered: OrderedDict[tuple[Any, ...], Rendered] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        #: The environment's globals, copied once: each rendering's variables are these,
        #: the context and the helpers in one dict, shared by the parts it renders.
        self._globals = dict(self.env.globals)

    def _candidates(self, locale: str) -> list[str]:
        locale = locale.replace("_", "-")
        out = [locale, locale.split("-")[0], self.default_locale, "en"]
        return list(dict.fromkeys(out))

    def _find(self, name: str, locale: str) -> str | None:
        """The locale directory holding ``name`` (all of a message's parts come from one)."""
        key = (name, locale)
        if key in self._folders:
            return self._folders[key]
        found = None
        for candidate in self._candidates(locale):
            if (self.directory / candidate / f"{name}.txt").is_file():
                found = candidate
                break
        self._folders[key] = found
        return found

    def _part(self, folder: str, name: str, suffix: str) -> jinja2.Template | None:
        if not (self.directory / folder / f"{name}.{suffix}").is_file():
            return None
        return self.env.get_template(f"{folder}/{name}.{suffix}")

    def _templates(self, name: str, locale: str) -> _Compiled | None:
        folder = self._find(name, locale)
        if folder is None:
            return None
        key = (folder, name)
        if key not in self._compiled:
            subject_t = self._part(folder, name, "subject.txt")
            self._compiled[key] = (
                None
                if subject_t is None
                else _Compiled(
                    subject_t,
                    self.env.get_template(f"{folder}/{name}.txt"),
                    self._part(folder, name, "html"),
                    self._part(folder, name, "short.txt"),
                )
            )
        return self._compiled[key]

    def has(self, name: str) -> bool:
        """Whether a template called ``name`` exists in the default locale."""
        return self._find(name, self.default_locale) is not None

    def render(
        self,
        name: str,
        context: dict[str, Any],
        *,
        locale: str,
        timezone: str = "UTC",
        parts: frozenset[str] = ALL_PARTS,
        cache: bool = True,
    ) -> Rendered:
        """Render ``name`` for ``locale`` with dates in ``timezone``.

        ``parts``: which of subject, text, html and short to render (the others come back
        empty: ``""`` or ``None``; :data:`CHANNEL_PARTS` says what each channel shows).

        ``cache``: keep (and look up) the rendering; the sender asks it only for messages
        that several routes receive with the same context (operations alerts) — a
        customer's context is theirs alone, so its key would cost without ever matching.

        :raises TemplateError: unknown template or a rendering error (a missing field).
        """
        key: tuple[Any, ...] | None = None
        if cache:
            try:
                key = (name, locale, timezone, parts, json.dumps(context, sort_keys=True))
            except (TypeError, ValueError):
                key = None  # not JSON (a datetime in a test's context): not cached
        if key is not None:
            with self._lock:
                found = self._rendered.get(key)
                if found is not None:
                    self._rendered.move_to_end(key)
                    return found
        compiled = self._templates(name, locale)
        if compiled is None:
            raise TemplateError(f"no template {name!r}")
        bl = _babel_locale(locale)
        helpers = {
            "money": lambda minor, currency: _money(minor, currency, bl),
            "when": lambda iso: _when(iso, timezone, bl),
            "day": lambda iso: _day(iso, bl),
            "account": lambda account_id: mask_account(str(account_id)),
            "tzname": timezone,
        }
        data = {**self._globals, **context, **helpers}
        try:
            subject = " ".join(_render(compiled.subject, data).split())
            text = _render(compiled.text, data).strip() + "\n" if "text" in parts else ""
            html = (
                _render(compiled.html, data)
                if compiled.html is not None and "html" in parts
                else None
            )
            if "short" not in parts:
                short = ""
            elif compiled.short is not None:
                short = " ".join(_render(compiled.short, data).split())
            else:
                short = subject
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {name!r}: {exc}") from None
        rendered = Rendered(subject=subject, text=text, html=html, short=short)
        if key is not None:
            with self._lock:
                self._rendered[key] = rendered
                if len(self._rendered) > self._cache_size:
                    self._rendered.popitem(last=False)
        return rendered


def _render(template: jinja2.Template, data: dict[str, Any]) -> str:
    """``template.render(data)`` where ``data`` already holds the globals: the context is
    made on ``data`` itself (``shared``) instead of merging the globals into a copy per
    part (Jinja's merge iterates a ``ChainMap``: a tenth of a reminder's CPU in a
    profile). Templates only read their variables, so ``data`` is not changed."""
    return "".join(template.root_render_func(template.new_context(data, shared=True)))


def _money(value: Any, currency: str, locale: str) -> str:
    """An ``int`` is minor units; a string is a decimal amount in the major unit."""
    if isinstance(value, int | str) and not isinstance(value, bool):
        return _money_cached(value, currency, locale)
    return _money_uncached(value, currency, locale)


@functools.lru_cache(maxsize=8192)
def _money_cached(value: int | str, currency: str, locale: str) -> str:
    return _money_uncached(value, currency, locale)


def _money_uncached(value: Any, currency: str, locale: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        amount: Decimal = from_minor(value, currency)
    else:
        amount = Decimal(str(value))
    fast = _money_formatter(currency, locale)
    if fast is not None and not amount.is_signed():
        return fast(amount)
    return str(format_currency(amount, currency, locale=locale))


#: Amounts a compiled money format must render exactly as Babel does before it is used.
_MONEY_PROBES = ("0", "0.01", "0.5", "1", "2.345", "2.355", "0.125", "12.34", "999.99", "1000",
                 "12345.6", "1234567.89",
                 "100000000", "123456789012.5")  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _money_formatter(currency: str, locale: str) -> Callable[[Decimal], str] | None:
    """A compiled form of Babel's ``format_currency`` for one (currency, locale), for
    amounts ≥ 0 — some ten times cheaper. Built from the locale's pattern (grouping,
    symbols, the text around the number) and kept only if it renders every probe amount
    exactly as Babel does; ``None`` (use Babel) otherwise."""
    try:
        loc = Locale.parse(locale)
        pattern = loc.currency_formats["standard"]
        primary, secondary = pattern.grouping
        group, point = get_group_symbol(loc), get_decimal_symbol(loc)
        digits = int(get_currency_precision(currency))
        zero = "0" + (point + "0" * digits if digits else "")
        probe = str(format_currency(Decimal(0), currency, locale=loc))
    except (KeyError, ValueError, TypeError, UnknownLocaleError):
        return None
    if probe.count(zero) != 1 or primary <= 0 or secondary <= 0:
        return None
    before, after = probe.split(zero)
    step = Decimal(1).scaleb(-digits)

    def fmt(amount: Decimal) -> str:
        text = f"{amount.quantize(step, rounding=ROUND_HALF_EVEN):f}"
        whole, _, frac = text.partition(".")
        if len(whole) > primary:
            head, tail = whole[:-primary], [whole[-primary:]]
            while len(head) > secondary:
                tail.insert(0, head[-secondary:])
                head = head[:-secondary]
            whole = group.join([head, *tail])
        return before + whole + (point + frac if digits else "") + after

    for text in _MONEY_PROBES:
        value = Decimal(text)
        if fmt(value) != format_currency(value, currency, locale=loc):
            return None
    return fmt


def _when(iso: Any, timezone: str, locale: str) -> str:
    if isinstance(iso, str):
        return _when_cached(iso, timezone, locale)
    return _when_uncached(iso, timezone, locale)


@functools.lru_cache(maxsize=8192)
def _when_cached(iso: str, timezone: str, locale: str) -> str:
    return _when_uncached(iso, timezone, locale)


def _when_uncached(iso: Any, timezone: str, locale: str) -> str:
    instant = iso if isinstance(iso, datetime) else datetime.fromisoformat(str(iso))
    local = instant.astimezone(ZoneInfo(timezone))
    return f"{format_datetime(local, 'medium', locale=locale)} {local.tzname()}"


def _day(iso: Any, locale: str) -> str:
    value = iso if isinstance(iso, date) else date.fromisoformat(str(iso)[:10])
    return str(format_date(value, "long", locale=locale))
