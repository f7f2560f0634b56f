"""Configuration errors: every bad value as one problem, all of them in one error."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from duly.config.database import redact_url

_MAX_LISTED = 10  # problems spelled out in one message before "and N more"


_MAX_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One bad setting.

    :ivar key: dotted key path, list items as ``[i]`` (``schedules[1].name``); empty for a
        problem with the file as a whole.
    :ivar rule: what is wrong or what is allowed.
    :ivar value: the offending value as shown to the user (``repr`` form, passwords
        hidden), or ``None`` when there is no single value (unknown or missing key).
    :ivar source: the environment variable or file the value came from, when known.
    """

    key: str
    rule: str
    value: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        head = self.key if self.value is None else f"{self.key} = {self.value}"
        text = f"{head}: {self.rule}" if head else self.rule
        if self.source:
            text += f" (from {self.source})"
        return one_line(text)


class ConfigError(Exception):
    """The settings are invalid. ``str()`` is one line listing every bad value.

    Example::

        config error: jobs.daily_balance_check.retry_attempts = -1: must be ≥ 0 (from duly.yaml)

    Several problems are separated by ``'; '``; past ten, the rest are counted
    (``and 3 more``). :attr:`problems` holds them one by one.
    """

    problems: tuple[ConfigProblem, ...]

    def __init__(self, problems: Sequence[ConfigProblem] | ConfigProblem | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(key="", rule=problems)]
        elif isinstance(problems, ConfigProblem):
            problems = [problems]
        self.problems = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        shown = [str(p) for p in self.problems[:_MAX_LISTED]]
        hidden = len(self.problems) - len(shown)
        if hidden:
            shown.append(f"and {hidden} more")
        return one_line("config error: " + "; ".join(shown or ["invalid settings"]))

    def __str__(self) -> str:
        return self._render()


def one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = repr(redact_url(value) if "://" in value else value)
    elif isinstance(value, dict | list):
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except ValueError:
            text = repr(value)
    else:
        text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 1] + "…"
    return one_line(text)
