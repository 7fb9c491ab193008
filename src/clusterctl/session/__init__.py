"""One authenticated connection to a node: handshake, requests and replies, heartbeat
and loss. See docs/how-it-works.md."""
