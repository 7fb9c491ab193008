"""``python -m clusterctl`` runs the command-line interface."""

from clusterctl.cli.main import main

main()
