"""What every ``duly`` command shares: the config path, settings, the store, clean failure."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from duly.config import Settings
    from duly.runtime import System

__all__ = ["fail", "load_settings", "open_system", "state"]

#: Set by the root callback: the ``--config`` path (or None for the default lookup).
state: dict[str, Any] = {"config": None}


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` on stderr as one line and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The settings, or exit 2 with the one-line configuration error."""
    from duly.config import ConfigError, settings_from_cli

    try:
        return settings_from_cli(state["config"])
    except ConfigError as exc:
        typer.echo(str(exc), err=True)  # already one line: "config error: key = value: rule"
        raise typer.Exit(2) from None


@contextmanager
def open_system(*, auto_upgrade: bool = False) -> Iterator[System]:
    """Settings, logging and store for one command; clear errors for a database not ready."""
    from duly.logs import configure_logging
    from duly.runtime import DatabaseNotReady, build_system

    settings = load_settings()
    configure_logging(settings.logging.level, settings.logging.format)
    try:
        system = build_system(settings, auto_upgrade=auto_upgrade)
    except DatabaseNotReady as exc:
        fail(str(exc))
    try:
        yield system
    finally:
        system.store.dispose()


