"""``python -m source_watch add NAME URL --every SECONDS [--schedule every:1m]``.

Adds a source to ``watched_sources`` in the database of ``DULY_DATABASE_URL`` (default
``sqlite:///duly.db``) and creates or updates the schedule ``source_watch`` that runs the job.
"""

from __future__ import annotations

import argparse
import sys

from duly.clock import SystemClock
from duly.config import load_settings
from duly.db import upgrade
from duly.engine.client import EngineClient
from duly.engine.registry import default_registry
from duly.engine.store.base import NewSchedule
from duly.engine.store.sql import SqlStore
from source_watch.jobs import JOB_NAME, add_source


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m source_watch")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="watch a URL")
    add.add_argument("name")
    add.add_argument("url")
    add.add_argument("--every", type=int, default=300, help="check frequency in seconds")
    add.add_argument(
        "--schedule", default="every:1m", help="how often the job looks for due sources"
    )
    args = parser.parse_args()
    store = SqlStore(load_settings().database_url)
    try:
        upgrade(store.engine)
        source_id = add_source(store.engine, args.name, args.url, args.every)
        client = EngineClient(store, default_registry, SystemClock())
        client.upsert_schedule(NewSchedule(name=JOB_NAME, job_name=JOB_NAME, spec=args.schedule))
        sys.stdout.write(
            f"source {source_id} {args.name}: every {args.every} s; schedule {args.schedule}\n"
        )
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
