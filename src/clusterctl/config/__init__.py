"""Where things live and what the user wrote: run and config directories, the hosts
file, the cookie. See docs/how-it-works.md."""
