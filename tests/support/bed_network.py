"""The SSH test bed's network (netns mode): can this machine build it, the bridge, one
namespace and veth pair per host, network faults (cut, slow), and deleting it all."""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Iterable, NoReturn

from bed_common import NETNS_DIR, BedError, NotSupported, _run, _run_parallel, _which


_netns_reason_cache: list[str | None] = []
_netns_probe_lock = threading.Lock()


def netns_unavailable_reason() -> str | None:
    """Why ``mode="netns"`` cannot be used here, or None if it can (cached)."""
    with _netns_probe_lock:
        if not _netns_reason_cache:
            _netns_reason_cache.append(_probe_netns())
        return _netns_reason_cache[0]


def netns_available() -> bool:
    """True if we are root and can create namespaces, veths and bridges."""
    return netns_unavailable_reason() is None


def _probe_netns() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    ip = _which("ip")
    if ip is None:
        return "iproute2 (ip) not found"
    if not os.path.exists("/proc/self/ns/net"):
        return "kernel without network namespaces"
    try:
        p = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "ip netns list failed: %s" % exc
    if p.returncode:
        return "ip netns list failed: %s" % p.stderr.strip()
    # Create a scratch namespace (recorded, so a crash here is cleaned up later)
    # and build a bridge + veth pair inside it, where nothing can be disturbed.
    from bed_records import _StateDir  # (bed_records imports this module)

    state = _StateDir()
    with state.locked():
        bed_id = state.new_id()
        ns = bed_id + "pr"
        state.write_record(bed_id, {"mode": "probe", "namespaces": [ns], "links": []})
    try:
        p = subprocess.run([ip, "netns", "add", ns], capture_output=True, text=True, timeout=10)
        if p.returncode:
            return "ip netns add failed: %s" % p.stderr.strip()
        script = "link add pbr type bridge\nlink add pa type veth peer name pb\nlink set pa master pbr\n"
        p = subprocess.run([ip, "-n", ns, "-batch", "-"], input=script, capture_output=True, text=True,
                           timeout=10)
        if p.returncode:
            return "cannot create bridge/veth: %s" % p.stderr.strip()
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "netns probe failed: %s" % exc
    finally:
        subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=10)
        state.remove_record(bed_id)



def _delete_network(namespaces: Iterable[str], links: Iterable[str]) -> list[str]:
    """Delete the given links (root namespace) and namespaces if present;
    return the names that still exist afterwards."""
    ip = _which("ip")
    if ip is None:
        return []
    namespaces, links = list(namespaces), list(links)
    have_links = set(os.listdir("/sys/class/net"))
    have_ns = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
    # veths first (deleting one end removes its peer), then namespaces, bridges last
    order = sorted((n for n in links if n in have_links), key=lambda n: n.endswith("br"))
    cmds = ["link del dev %s" % n for n in order if not n.endswith("br")]
    cmds += ["netns del %s" % n for n in namespaces if n in have_ns]
    cmds += ["link del dev %s" % n for n in order if n.endswith("br")]
    if cmds:
        subprocess.run([ip, "-force", "-batch", "-"], input="\n".join(cmds) + "\n",
                       capture_output=True, text=True, timeout=60)
    have_links = set(os.listdir("/sys/class/net"))
    have_ns = set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()
    return [n for n in links if n in have_links] + [n for n in namespaces if n in have_ns]



class NetworkFaults:
    """The network of an :class:`~sshbed.SSHTestBed`: set up, cut, restored, slowed."""

    def _setup_network(self) -> None:
        ip = _which("ip")
        plan = self.plan
        taken = _run([ip, "-4", "-o", "addr", "show", "to", plan.network]).stdout.strip()
        if taken:
            raise BedError("%s is already in use on this machine, not touching it:\n%s" % (plan.network, taken))
        routes = [r for r in _run([ip, "-4", "-o", "route", "show", "match", plan.bridge]).stdout.splitlines()
                  if r.strip() and not r.startswith("default")]
        if routes:
            raise BedError("a route already covers %s, not touching it:\n%s" % (plan.network, "\n".join(routes)))
        v6 = os.path.isdir("/proc/sys/net/ipv6")
        br = self.bridge
        cmds = ["link add name %s type bridge" % br]
        if v6:
            cmds.append("link set dev %s addrgenmode none" % br)
        cmds += ["addr add %s/%d dev %s" % (plan.bridge, plan.prefixlen, br), "link set dev %s up" % br]
        for h in self._hosts:
            cmds.append("netns add %s" % h.namespace)
            cmds.append("link add name %s type veth peer name %s netns %s" % (h.veth, h.peer, h.namespace))
            if v6:
                cmds.append("link set dev %s addrgenmode none" % h.veth)
            cmds += ["link set dev %s master %s" % (h.veth, br), "link set dev %s up" % h.veth]
        _run([ip, "-batch", "-"], input="\n".join(cmds) + "\n")
        jobs = []
        for h in self._hosts:
            sub = ["link set dev lo up"]
            if v6:
                sub.append("link set dev %s addrgenmode none" % h.peer)
            sub += ["addr add %s/%d dev %s" % (h.address, plan.prefixlen, h.peer), "link set dev %s up" % h.peer]
            jobs.append(([ip, "-n", h.namespace, "-batch", "-"], "\n".join(sub) + "\n"))
        _run_parallel(jobs, "ip")

    def _need_netns(self, what: str) -> NoReturn:
        raise NotSupported("%s needs the netns bed (root + ip netns); this bed runs in %s mode"
                           % (what, self.mode))

    def cut(self, alias: str) -> None:
        """Partition the host: both ends of its veth go down.  Processes keep
        running; packets to and from it are dropped, new connections fail."""
        h = self._host(alias)
        if not h.namespace:
            self._need_netns("cut()")
        ip = _which("ip")
        _run([ip, "link", "set", "dev", h.veth, "down"])
        _run([ip, "-n", h.namespace, "link", "set", "dev", h.peer, "down"])

    def restore(self, alias: str) -> None:
        """Undo ``cut``."""
        h = self._host(alias)
        if not h.namespace:
            self._need_netns("restore()")
        ip = _which("ip")
        _run([ip, "-n", h.namespace, "link", "set", "dev", h.peer, "up"])
        _run([ip, "link", "set", "dev", h.veth, "up"])

    def slow(self, alias: str, delay_ms: int) -> None:
        """Delay every packet sent to the host by ``delay_ms`` (netem on the
        bridge side of its veth, so the round trip grows by ``delay_ms``);
        ``delay_ms <= 0`` removes the delay."""
        h = self._host(alias)
        if not h.namespace:
            self._need_netns("slow()")
        tc = _which("tc")
        if tc is None:
            raise NotSupported("slow() needs tc (iproute2) which is not installed")
        if delay_ms <= 0:
            subprocess.run([tc, "qdisc", "del", "dev", h.veth, "root"], capture_output=True, timeout=30)
            return
        p = subprocess.run([tc, "qdisc", "replace", "dev", h.veth, "root", "netem", "delay",
                            "%dms" % int(delay_ms)], capture_output=True, text=True, timeout=30)
        if p.returncode:
            err = p.stderr.strip()
            if "unknown" in err.lower() or "not supported" in err.lower() or "No such file" in err:
                raise NotSupported("slow() needs the netem qdisc, which this kernel lacks "
                                   "(sch_netem not built/loaded): %s" % err)
            raise BedError("tc netem failed: %s" % err)

    def unsupported_reason(self, feature: str) -> str | None:
        """Why ``cut``/``slow`` (feature names) cannot work on this bed, else None."""
        if feature not in ("cut", "slow"):
            raise ValueError("unknown feature %r" % feature)
        if self.mode != "netns":
            return "%s() needs the netns bed; this bed runs in %s mode" % (feature, self.mode)
        if feature == "slow":
            if self._netem_reason is False:
                tc = _which("tc")
                if tc is None:
                    self._netem_reason = "tc (iproute2) not installed"
                else:
                    p = subprocess.run([tc, "qdisc", "add", "dev", self.bridge, "root", "netem", "delay",
                                        "1ms"], capture_output=True, text=True, timeout=30)
                    if p.returncode:
                        self._netem_reason = "netem qdisc unavailable: %s" % p.stderr.strip()
                    else:
                        subprocess.run([tc, "qdisc", "del", "dev", self.bridge, "root"],
                                       capture_output=True, timeout=30)
                        self._netem_reason = None
            return self._netem_reason or None
        return None
