"""A customer's execution history over every operation kind."""
