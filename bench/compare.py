"""Before/after: ``bench/engine.py`` against several git revisions, interleaved, in one run.

Run: ``.venv/bin/python bench/compare.py 45b2c83 HEAD [--rounds 2] -- --runs 20000 --only enq,run1``

Each revision is checked out in a temporary git worktree and measured with this tree's
``bench/engine.py`` (the same measurement for all) and the revision's own ``src`` on
``PYTHONPATH``. Rounds alternate the revisions (A B A B …) so that a noisy neighbour or
a warming disk touches each alike. Printed: per store and figure, the median of every
repeat of every round, and each revision's ratio to the first one.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW = re.compile(r"^(\w+) raw: (\{.*?\}) lateness (\[.*?\]);", re.MULTILINE)
FIGURES = {"enq": "enqueue/s", "fire": "fire/s", "run1": "run/s, 1 process",
           "run3": "run/s, 3 processes"}  # fmt: skip


def checkout(rev: str, into: Path) -> Path:
    path = into / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), rev],
                   check=True)  # fmt: skip
    return path


def measure(tree: Path, engine_args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "engine.py"), *engine_args],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout + out.stderr  # the raw figures go to stderr


def parse(stdout: str) -> dict[tuple[str, str], list[float]]:
    """Per (store, figure) every repeat's value; lateness as p50/p99 in ms."""
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for store, raw, lateness in RAW.findall(stdout):
        for key, values in ast.literal_eval(raw).items():
            if any(values):
                found[(store, FIGURES.get(key, key))] += list(values)
        for p50, p99, _ in ast.literal_eval(lateness):
            found[(store, "lateness p50 ms")].append(p50)
            found[(store, "lateness p99 ms")].append(p99)
    return found


def main() -> None:
    argv = sys.argv[1:]
    engine_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("revs", nargs="+", help="git revisions; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(ours)
    results: dict[str, dict[tuple[str, str], list[float]]] = {r: defaultdict(list) for r in args.revs}
    with tempfile.TemporaryDirectory(prefix="duly-compare-") as tmp:
        trees = {rev: checkout(rev, Path(tmp)) for rev in args.revs}
        try:
            for round_no in range(args.rounds):
                order = args.revs if round_no % 2 == 0 else list(reversed(args.revs))
                for rev in order:
                    print(f"round {round_no + 1}: {rev}", file=sys.stderr, flush=True)
                    stdout = measure(trees[rev], engine_args)
                    if round_no == 0 and rev == order[0]:
                        print(stdout.splitlines()[0])  # the machine line
                    for key, values in parse(stdout).items():
                        results[rev][key] += values
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tree)], check=False)  # fmt: skip
    print_table(args.revs, results, args.rounds)


def print_table(revs: list[str], results: dict[str, dict[tuple[str, str], list[float]]],
                rounds: int) -> None:  # fmt: skip
    base = revs[0]
    print(f"medians over {rounds} interleaved rounds; ratio to {base}\n")
    print("| store | figure | " + " | ".join(revs) + " | " + " | ".join(
        f"{r} / {base}" for r in revs[1:]) + " |")  # fmt: skip
    print("|---|---|" + "---:|" * (2 * len(revs) - 1))
    for key in sorted(results[base]):
        medians = [statistics.median(results[r][key]) if results[r].get(key) else float("nan")
                   for r in revs]  # fmt: skip
        cells = [f"{m:,.1f}" if m < 100 else f"{m:,.0f}" for m in medians]
        ratios = [f"{m / medians[0]:.2f}" if medians[0] else "-" for m in medians[1:]]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
