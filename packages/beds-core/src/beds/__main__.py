"""``python -m beds`` runs the ``beds`` command."""

from beds.cli import main

main()
