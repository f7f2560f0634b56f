"""One router per resource; :mod:`duly.api.app` mounts them under ``/api/v1``."""
