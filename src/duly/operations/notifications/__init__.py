"""Notification wiring of the operations: the outbox relay and the notify parts they use."""
