"""``python -m clusterctl`` runs the command-line interface."""

from .cli import main

main()
