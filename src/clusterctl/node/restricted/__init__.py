"""A restricted host: ``agent`` (what sshd runs for the controller's key, installed by the
host's owner: ``clusterctl-agent`` or ``python -m clusterctl.node.restricted``),
``policy`` (the owner's rules and limits) and ``worker`` (a worker that calls only what
the policy allows, with plain data)."""
