"""The environment that travels: what a user's function needs from the controller's
Python (its installed distributions, the user's own modules) goes with it to the hosts
that lack it, content-addressed, over the connection a call already has.

``needs`` finds the modules a pickled call refers to and those its functions import;
``packages`` turns them into packages (a distribution whole, with the installed
distributions it requires; the user's own module or package tree), each with an id
from its files; ``shipping`` makes sure a node's host holds them before a call that
needs them, once per host. See docs/how-it-works.md, "The environment that travels".
"""
