"""The nightly premium balance check, its results and its monitoring figures."""
