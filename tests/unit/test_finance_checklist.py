"""Every item 1–21 of finance-rules.md's checklist (money movement) has a test that names it.

A test names item *n* by starting with ``test_<n>_`` (several items: ``test_6_7_9_…``).
This keeps the checklist and the suite from drifting apart; the tests themselves check
the rules.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ITEMS = range(1, 22)
_NUMBERED = re.compile(r"^test_((?:\d+_)+)")


def _tests_by_item() -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                match = _NUMBERED.match(node.name)
                if match:
                    for number in match.group(1).strip("_").split("_"):
                        found[int(number)].append(f"{path.relative_to(TESTS)}::{node.name}")
    return found


def test_every_checklist_item_1_to_21_has_a_named_test() -> None:
    found = _tests_by_item()
    missing = [n for n in ITEMS if not found.get(n)]
    assert not missing, f"checklist items without a test named test_<n>_…: {missing}"


def test_item_21_covers_ach_reinitiation_and_the_retry_limits() -> None:
    names = " ".join(_tests_by_item()[21])
    assert "ach" in names and "max_attempts" in names
