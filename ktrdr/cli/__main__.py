"""``python -m ktrdr.cli``: the same as the ``ktrdr`` console script."""

from ktrdr.cli import main

main()
