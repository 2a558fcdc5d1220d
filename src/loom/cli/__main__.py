"""``python -m loom.cli`` is the ``loom`` command."""

from . import main

main()
