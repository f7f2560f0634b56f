"""``python -m duly.cli``: the same as the ``duly`` command."""

from duly.cli import main

main()
