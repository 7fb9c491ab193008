"""Whether a compiled package can load on a node: its wheel's tags (its ``WHEEL``
file) against what the node says of itself in its hello (machine, C library, Python),
decided here, before anything is shipped or run, so a host that cannot load it gets
one line naming the package, the host and why, never a crash or a cryptic ImportError."""

from __future__ import annotations

import re

_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(.+)\Z")
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def glibc_of(libc: str) -> tuple[int, int] | None:
    """``glibc 2.36`` as (2, 36); None for another C library or none said."""
    match = re.fullmatch(r"glibc (\d+)\.(\d+).*", libc or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def platform_needs(platform: str) -> tuple[str | None, tuple[int, int] | None]:
    """A wheel platform tag's machine and least glibc (None: any); ("?", None) for a
    platform this module does not know (a build for this machine alone, musl, ...)."""
    if platform == "any":
        return None, None
    match = _MANYLINUX.match(platform)
    if match:
        return match.group(3), (int(match.group(1)), int(match.group(2)))
    name, _, machine = platform.partition("_")
    if name in _LEGACY:
        return machine, _LEGACY[name]
    return "?", None


def tag_fits(tag: str, python: str, machine: str, glibc: tuple[int, int] | None) -> str | None:
    """Why the wheel tag ``tag`` cannot load on a node of this Python (``3.11.7``),
    machine and glibc; None if it can."""
    try:
        py, abi, platforms = tag.split("-")
    except ValueError:
        return "its wheel tag %r is not one clusterctl reads" % tag
    major_minor = "".join(python.split(".")[:2])
    if py.startswith("cp") and py != "cp" + major_minor and abi != "abi3":
        return "built for Python %s.%s" % (py[2], py[3:])
    for platform in platforms.split("."):
        wanted_machine, wanted_glibc = platform_needs(platform)
        if wanted_machine is None:
            return None
        if wanted_machine != "?" and wanted_machine != machine:
            continue
        if wanted_machine == "?":
            return "built as %s, which clusterctl cannot match to a host" % platform
        if glibc is None:
            return "built for %s, and the host's C library is not glibc" % platform
        if glibc >= wanted_glibc:
            return None
        return "built for %s; the host has glibc %d.%d" % (platform, *glibc)
    return "built for %s" % platforms


def cannot_load(package, node: str, hello: dict) -> str | None:
    """One line saying why ``package`` cannot load on ``node`` (its ``hello``), or None.
    A compiled package with no wheel tags (built here) is taken as built for this
    controller's machine, Python and glibc."""
    if not package.compiled:
        return None
    machine = str(hello.get("machine") or "")
    python = str(hello.get("python") or "")
    glibc = glibc_of(str(hello.get("libc") or ""))
    tags = package.tags or (here_tag(),)
    reasons = [tag_fits(tag, python, machine, glibc) for tag in tags]
    if any(reason is None for reason in reasons):
        return None
    reason = reasons[-1].replace("the host", node)
    return (f"{package.describe()} is {reason}: install {package.name} on {node}, or leave "
            f"{node} out with --nodes")


def here_tag() -> str:
    """The wheel tag of what is built on this controller."""
    import os
    import sys

    python = "cp%d%d" % sys.version_info[:2]
    glibc = glibc_of(os.confstr("CS_GNU_LIBC_VERSION") or "") or (0, 0)
    return "%s-%s-manylinux_%d_%d_%s" % (python, python, glibc[0], glibc[1], os.uname().machine)
