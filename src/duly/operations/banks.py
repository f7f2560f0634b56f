"""Which bank a transfer moves money with: banks by name, built for the running engine.

``ledger`` (the built-in :class:`~duly.banking.ledger.LedgerBank` on duly's database) is
always there. ``http`` is added from the environment when ``DULY_BANK_HTTP_URL`` is set
(``DULY_BANK_HTTP_TOKEN``, ``DULY_BANK_HTTP_TIMEOUT`` seconds, default 30). Tests and
embedding applications register their own with :meth:`BankDirectory.register`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from sqlalchemy import Engine

from duly.banking.http import DEFAULT_TIMEOUT, HttpBank
from duly.banking.ledger import LedgerBank
from duly.banking.port import BankingPort
from duly.clock import Clock

__all__ = ["BankDirectory", "UnknownBank", "default_banks"]

BankFactory = Callable[[Engine, Clock], BankingPort]


class UnknownBank(LookupError):
    """No bank is registered under that name."""


class BankDirectory:
    """Banks by name: shared instances, or factories called with the engine and clock."""

    def __init__(self) -> None:
        self._banks: dict[str, BankingPort] = {}
        self._factories: dict[str, BankFactory] = {"ledger": LedgerBank}
        self._lock = threading.Lock()

    def register(self, name: str, bank: BankingPort) -> None:
        """Make the instance ``bank`` available as ``name`` (replacing one of that name)."""
        with self._lock:
            self._banks[name] = bank
            self._factories.pop(name, None)

    def register_factory(self, name: str, factory: BankFactory) -> None:
        """Build the bank ``name`` with ``factory(engine, clock)`` each time it is asked for."""
        with self._lock:
            self._factories[name] = factory
            self._banks.pop(name, None)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (``ledger`` cannot be removed)."""
        if name != "ledger":
            with self._lock:
                self._banks.pop(name, None)
                self._factories.pop(name, None)

    def names(self) -> list[str]:
        """Registered names (and ``http`` if configured by the environment)."""
        self._from_env()
        return sorted({*self._banks, *self._factories})

    def has(self, name: str) -> bool:
        """Whether ``name`` can be used."""
        return name in self.names()

    def get(self, name: str, engine: Engine, clock: Clock) -> BankingPort:
        """The bank ``name`` for a process on ``engine`` with ``clock``.

        :raises UnknownBank: nothing is registered under ``name``.
        """
        self._from_env()
        with self._lock:
            bank, factory = self._banks.get(name), self._factories.get(name)
        if bank is not None:
            return bank
        if factory is not None:
            return factory(engine, clock)
        raise UnknownBank(f"no bank {name!r} (known: {', '.join(self.names())})")

    def _from_env(self) -> None:
        url = os.environ.get("DULY_BANK_HTTP_URL")
        if not url or "http" in self._banks or "http" in self._factories:
            return
        bank = HttpBank(
            url,
            token=os.environ.get("DULY_BANK_HTTP_TOKEN") or None,
            timeout=float(os.environ.get("DULY_BANK_HTTP_TIMEOUT") or DEFAULT_TIMEOUT),
        )
        with self._lock:
            self._banks.setdefault("http", bank)


#: The directory jobs use.
default_banks = BankDirectory()
