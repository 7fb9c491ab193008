"""The hub: the controller machine's own daemon, one per user, holding the SSH
connections to every host so a command pays no SSH handshake. See docs/how-it-works.md
("The hub")."""
