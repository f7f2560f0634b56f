"""Structured logging: JSON lines (or console) with redaction of anything secret.

No log line may carry a balance, a full account or card number, or a secret. Redaction
happens here, once, for every line: values under sensitive keys are replaced, and any
Luhn-valid run of 13–19 digits (a card number) in any string is masked to its last four.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["SENSITIVE_KEYS", "configure_logging", "mask_pans", "redact"]

#: Keys whose values never reach a log line.
SENSITIVE_KEYS = frozenset(
    {
        "balance",
        "amount",
        "available",
        "password",
        "secret",
        "token",
        "authorization",
        "api_key",
        "account_number",
        "iban",
        "pan",
        "cvv",
        "card_number",
        "database_url",
    }
)
_DIGITS = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_pans(text: str) -> str:
    """Replace Luhn-valid 13–19 digit runs (card numbers) by ``****`` plus the last four digits."""

    def repl(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            return f"****{digits[-4:]}"
        return m.group(0)

    return _DIGITS.sub(repl, text)


def _is_sensitive(key: str) -> bool:
    k = key.lower()
    return k in SENSITIVE_KEYS or any(k.endswith(f"_{s}") for s in SENSITIVE_KEYS)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return mask_pans(value)
    if isinstance(value, dict):
        return {k: "[redacted]" if _is_sensitive(str(k)) else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact sensitive keys and card numbers in every field."""
    for key in list(event_dict):
        event_dict[key] = "[redacted]" if _is_sensitive(key) else _clean(event_dict[key])
    return event_dict


class _StderrLogger:
    """Writes each line to ``sys.stderr`` as it is at the time of the call.

    Loggers are cached on first use; binding the stream at configuration time would keep
    writing to a stream that a CLI runner or a test has since swapped out and closed.
    """

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send structlog (and stdlib logging) to stderr as JSON lines or console text."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=sys.stderr,
        format="%(levelname)s %(name)s %(message)s",
    )
