"""A source-watch job on the engine alone: see README.md."""
