"""The operations dashboard at ``/ui``: server-rendered pages over the same services as the API.

``duly serve`` mounts :func:`create_dashboard` beside the API. See ``docs/dashboard.md``.
"""

from __future__ import annotations

from duly.web.app import DEFAULT_SESSION_LIFETIME, Dashboard, create_dashboard

__all__ = ["DEFAULT_SESSION_LIFETIME", "Dashboard", "create_dashboard"]
