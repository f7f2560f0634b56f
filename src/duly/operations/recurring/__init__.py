"""Recurring payments: weekly, monthly, quarterly, yearly or an RRULE."""
