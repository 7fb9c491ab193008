"""``python -m clusterctl.node.restricted --policy FILE``: the agent (see ``agent``)."""

from .agent import main

main()
