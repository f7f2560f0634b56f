"""The installed version of duly, apart from the package face so every layer may read it."""

__version__ = "0.1.0"
