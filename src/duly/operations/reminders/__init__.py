"""Payment reminders: planned per occurrence and channel, sent at most once."""
