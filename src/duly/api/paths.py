"""Where the API lives: every resource router's prefix starts with :data:`API_PREFIX`."""

from __future__ import annotations

__all__ = ["API_PREFIX"]

API_PREFIX = "/api/v1"
