"""How bytes reach a node: local processes, SSH (client pool, ssh_config, known_hosts),
and the code bundle that is shipped. See docs/how-it-works.md."""
