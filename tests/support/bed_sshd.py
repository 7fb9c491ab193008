"""The SSH test bed's sshd servers: their config files and keys, the client's
ssh_config and known_hosts, starting, stopping and restarting each host's sshd, host
keys, forwarding and jump aliases."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bed_common import (BedError, BedHost, _free_ports, _Host, _pub_line, _run, _run_parallel, _ssh_banner,
                        _tail, _which, openssh_version)
from bed_processes import _signal, _start_time


# -- config rendering ----------------------------------------------------------------

def _q(value: object) -> str:
    """Quote one argument for sshd_config / ssh_config."""
    s = str(value)
    if any(c in s for c in '"\n\r\0'):
        raise BedError("cannot put %r into an OpenSSH config file" % s)
    if s == "" or any(c in s for c in " \t'#\\="):
        return '"%s"' % s
    return s


def _q_env(name: str, value: str) -> str:
    entry = "%s=%s" % (name, value)
    if any(c in entry for c in '"\n\r\0'):
        raise BedError("cannot put %r into SetEnv" % entry)
    return '"%s"' % entry if any(c in entry for c in " \t'#\\") else entry



def make_bare_python(directory: Path) -> None:
    """A ``python3`` as bare as a fresh host's: the controller's own interpreter (same
    major.minor) in a virtualenv without pip and without the base's site-packages, so
    nothing the controller installed (clusterctl, cloudpickle, paramiko, numpy) imports."""
    if (directory / "bin" / "python3").exists():
        return
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", "--without-pip", str(directory)])


def bare_path(directory: Path) -> str:
    """The hosts' PATH: the bare ``python3`` first, then the system's directories."""
    return "%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" % (directory / "bin")


class SshdHosts:
    """The files and sshd processes of each host of an :class:`~sshbed.SSHTestBed`."""

    def _prepare_files(self) -> None:
        self.client_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.client_dir, 0o700)
        jobs = []
        for path, comment in [(self.client_key, "clusterctl-test-client")] + [
                (h.host_key, "clusterctl-test-%s" % h.alias) for h in self._hosts]:
            path.parent.mkdir(parents=True, exist_ok=True)
            for p in (path, path.with_name(path.name + ".pub")):
                if p.exists():
                    p.unlink()
            jobs.append([_which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
        _run_parallel(jobs, "ssh-keygen")
        client_pub = _pub_line(self.client_key.with_name(self.client_key.name + ".pub"))
        make_bare_python(self.bare_python)
        for h in self._hosts:
            for sub in ("", "cache", "run", "config", "home"):
                d = h.env_dir / sub
                d.mkdir(parents=True, exist_ok=True)
                os.chmod(d, 0o700)
            os.chmod(h.sshd_dir, 0o700)
            h.pubkey_line = _pub_line(h.host_key.with_name(h.host_key.name + ".pub"))
            h.authorized_keys.write_text(client_pub + " clusterctl-test-client\n")
            h.log.touch()
            self._write_sshd_config(h)
        self._write_client_files()

    def _write_sshd_config(self, h: _Host) -> None:
        ver = openssh_version() or (0, 0)
        env = {"XDG_CACHE_HOME": str(h.env_dir / "cache"), "XDG_RUNTIME_DIR": str(h.env_dir / "run"),
               "XDG_CONFIG_HOME": str(h.env_dir / "config"),
               # a home of its own, whose shell rc files are none of this machine's, and a
               # PATH whose python3 has the standard library and nothing else
               "HOME": str(h.env_dir / "home"), "PATH": bare_path(self.bare_python)}
        env.update(self._extra_env)
        fwd = "yes" if h.forwarding else "no"
        lines = [
            "# sshd_config of test bed host %s (generated; the system sshd_config is not used)" % h.alias,
            "ListenAddress %s" % h.address,
            "Port %d" % h.port,
            "AddressFamily inet",
            "HostKey %s" % _q(h.host_key),
            *("HostKey %s" % _q(path) for path, _ in h.extra_keys),
            "PidFile %s" % _q(h.pidfile),
            "AuthorizedKeysFile %s" % _q(h.authorized_keys),
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "AllowTcpForwarding %s" % fwd,
            "AllowStreamLocalForwarding %s" % fwd,
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "GatewayPorts no",
            "PermitUserEnvironment no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "MaxStartups 200",
            "MaxSessions 64",
            "LoginGraceTime 30",
            "LogLevel VERBOSE",
            "SetEnv " + " ".join(_q_env(k, v) for k, v in env.items()),
        ]
        if ver >= (9, 8):
            # bursts of connections from the test process must not get it blocked
            lines.append("PerSourcePenalties no")
        text = "\n".join(lines) + "\n"
        for extra in (self._extra_sshd_config, h.extra_config):
            if extra:
                text += extra.rstrip("\n") + "\n"
        h.config.write_text(text)

    def _write_client_files(self) -> None:
        with self._lock:
            self.known_hosts.write_text("".join("%s %s\n" % (h.public().known_hosts_name, h.pubkey_line)
                                                for h in self._hosts))
            blocks = ["# ssh_config of the test bed (use: ssh -F %s h1 ...)\n" % self.ssh_config]
            for h in self._hosts:
                blocks.append("Host %s\n  HostName %s\n  Port %d\n" % (h.alias, h.address, h.port))
            for name, (target, via) in self._jumps.items():
                t = self._host(target)
                blocks.append("Host %s\n  HostName %s\n  Port %d\n  ProxyJump %s\n"
                              % (name, t.address, t.port, via))
            blocks.append("\n".join([
                "Host *",
                "  User %s" % _q(self.user),
                "  IdentityFile %s" % _q(self.client_key),
                "  IdentitiesOnly yes",
                "  IdentityAgent none",
                "  UserKnownHostsFile %s" % _q(self.known_hosts),
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  UpdateHostKeys no",
                "  CheckHostIP no",
                "  HashKnownHosts no",
                "  BatchMode yes",
                "  ConnectTimeout 5",
                "  ControlMaster no",
                "  ControlPath none",
                "  ForwardAgent no",
                "  ForwardX11 no",
                "  LogLevel ERROR",
            ]) + "\n")
            tmp = self.ssh_config.with_name(".ssh_config.tmp")
            tmp.write_text("\n".join(blocks))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.ssh_config)

    def _check_configs(self) -> None:
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            # privilege separation directory a root sshd insists on (what the
            # distribution's service unit would create)
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sshd = _which("sshd")
        procs = [(h, subprocess.Popen([sshd, "-t", "-f", str(h.config)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                 for h in self._hosts]
        errors = []
        for h, p in procs:
            out, _ = p.communicate(timeout=30)
            if p.returncode:
                errors.append("%s: %s" % (h.alias, out.strip()))
        if errors:
            raise BedError("sshd -t rejected the generated config:\n" + "\n".join(errors))

    def _spawn_sshd(self, h: _Host) -> None:
        cmd = [_which("sshd"), "-D", "-e", "-f", str(h.config), "-E", str(h.log)]
        if h.namespace:
            cmd = [_which("ip"), "netns", "exec", h.namespace] + cmd
        try:
            h.pidfile.unlink()
        except FileNotFoundError:
            pass
        with open(h.log, "ab") as log:
            log.write(("--- bed: starting sshd for %s at %s ---\n"
                       % (h.alias, time.strftime("%H:%M:%S"))).encode())
            log.flush()
            h.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       close_fds=True, start_new_session=True)
        h.sshd_start = _start_time(h.popen.pid)
        self._record["sshd"].append([h.popen.pid, h.sshd_start])
        self._save_record()
        self.seen_pids.add(h.popen.pid)

    def _start_sshds(self, hosts: list[_Host]) -> None:
        retries = {h.alias: 0 for h in hosts}
        for h in hosts:
            self._spawn_sshd(h)
        pending = list(hosts)
        deadline = time.monotonic() + self._start_timeout
        while pending:
            still = []
            for h in pending:
                if h.popen.poll() is not None:
                    log = _tail(h.log)
                    if (self.mode == "loopback" and "Address already in use" in log
                            and retries[h.alias] < 5):
                        retries[h.alias] += 1
                        h.port = _free_ports(1)[0]
                        self._write_sshd_config(h)
                        self._write_client_files()
                        self._spawn_sshd(h)
                        still.append(h)
                        continue
                    raise BedError("sshd of %s exited with status %s; log %s:\n%s"
                                   % (h.alias, h.popen.returncode, h.log, log))
                if not _ssh_banner(h.address, h.port):
                    still.append(h)
            pending = still
            if pending:
                if time.monotonic() >= deadline:
                    raise BedError("sshd did not accept connections within %.0f s on %s; logs:\n%s" % (
                        self._start_timeout, ", ".join(h.alias for h in pending),
                        "\n".join("[%s] %s" % (h.alias, _tail(h.log)) for h in pending)))
                time.sleep(0.02)

    def _stop_sshd(self, h: _Host, timeout: float = 5.0) -> None:
        p = h.popen
        if p is None:
            return
        if p.poll() is None:
            _signal([p.pid], signal.SIGTERM)
            _signal([p.pid], signal.SIGCONT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal([p.pid], signal.SIGKILL)
                p.wait(timeout)

    def restart_sshd(self, alias: str) -> BedHost:
        """(Re)start the sshd of a host, e.g. after ``kill_host``; sessions stay."""
        with self._lock:
            h = self._host(alias)
            self._stop_sshd(h)
            self._start_sshds([h])
            return h.public()

    # -- host keys, forwarding, jump aliases -----------------------------------------

    def set_host_key(self, alias: str, new_key: Path | str | None = None) -> str:
        """Give the host a new host key (freshly generated, or a copy of the
        private key file ``new_key``) and restart its sshd.  known_hosts keeps
        the old key, so clients now see a changed host key.  Returns the new
        public key line; ``refresh_known_hosts()`` trusts it."""
        with self._lock:
            h = self._host(alias)
            pub = h.host_key.with_name(h.host_key.name + ".pub")
            for p in (h.host_key, pub):
                if p.exists():
                    p.unlink()
            keygen = _which("ssh-keygen")
            if new_key is None:
                _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "clusterctl-test-%s" % alias,
                      "-f", str(h.host_key)])
            else:
                shutil.copyfile(new_key, h.host_key)
                os.chmod(h.host_key, 0o600)
                pub.write_text(_run([keygen, "-y", "-f", str(h.host_key)]).stdout)
            h.pubkey_line = _pub_line(pub)
            self.restart_sshd(alias)
            return h.pubkey_line

    def add_host_key(self, alias: str, key_type: str = "ecdsa") -> str:
        """Let the host serve one more host key, a new one of ``key_type`` (``ecdsa``,
        ``rsa``), besides its ed25519 key, and restart its sshd.  known_hosts is not
        changed (it keeps only the ed25519 key).  Returns the new public key line
        (``type base64``); ``drop_host_keys`` undoes."""
        if key_type not in ("ecdsa", "rsa"):
            raise ValueError("key_type must be 'ecdsa' or 'rsa', not %r" % key_type)
        with self._lock:
            h = self._host(alias)
            path = h.sshd_dir / ("ssh_host_%s_key" % key_type)
            if any(p == path for p, _ in h.extra_keys):
                raise BedError("%s already serves an extra %s key" % (alias, key_type))
            for p in (path, path.with_name(path.name + ".pub")):
                if p.exists():
                    p.unlink()
            _run([_which("ssh-keygen"), "-q", "-t", key_type, "-N", "", "-C",
                  "clusterctl-test-%s" % alias, "-f", str(path)])
            line = _pub_line(path.with_name(path.name + ".pub"))
            h.extra_keys.append((path, line))
            self._write_sshd_config(h)
            self.restart_sshd(alias)
            return line

    def drop_host_keys(self, alias: str) -> None:
        """Undo ``add_host_key``: the host serves only its ed25519 key again."""
        with self._lock:
            h = self._host(alias)
            if not h.extra_keys:
                return
            for path, _ in h.extra_keys:
                for p in (path, path.with_name(path.name + ".pub")):
                    if p.exists():
                        p.unlink()
            h.extra_keys.clear()
            self._write_sshd_config(h)
            self.restart_sshd(alias)

    def refresh_known_hosts(self) -> None:
        """Rewrite known_hosts with every host's current key."""
        self._write_client_files()

    def set_forwarding(self, alias: str, allowed: bool = True) -> None:
        """Switch ``AllowTcpForwarding`` of one host, restarting its sshd if needed."""
        with self._lock:
            h = self._host(alias)
            if h.forwarding == bool(allowed):
                return
            h.forwarding = bool(allowed)
            self._write_sshd_config(h)
            if h.popen is not None:
                self.restart_sshd(alias)

    def add_jump(self, target_alias: str, via_alias: str) -> str:
        """Add ssh_config alias ``<target>-via-<via>`` reaching the target with
        ``ProxyJump <via>``; turns on forwarding on ``via``.  Returns the alias."""
        with self._lock:
            self._host(target_alias)
            self.set_forwarding(via_alias, True)
            name = "%s-via-%s" % (target_alias, via_alias)
            self._jumps[name] = (target_alias, via_alias)
            self._write_client_files()
            return name
