"""Scheduled transfers: one-off money movements at a local date and time."""
