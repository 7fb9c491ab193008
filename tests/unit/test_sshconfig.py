"""Resolving SSH targets the way OpenSSH does, through ``ssh -G`` and through paramiko.

Every behavioural test runs on both paths (``mode`` fixture), so the paramiko fallback
is held to what OpenSSH itself prints. ``HOME`` points into the test's temporary
directory and every config is passed explicitly (``ssh -F``), so the user's own
``~/.ssh`` is never read. Nothing connects anywhere.
"""

from __future__ import annotations

import getpass
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from clusterctl.transport import sshconfig
from clusterctl.errors import ClusterError
from clusterctl.transport.sshconfig import SSHConfigError, SSHTarget, resolve

HAVE_SSH = shutil.which("ssh") is not None


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    sshconfig.clear_cache()
    yield home
    sshconfig.clear_cache()


@pytest.fixture(params=["ssh -G", "paramiko"])
def mode(request) -> bool:
    """use_ssh_binary for each path; the ssh -G one needs the OpenSSH client."""
    if request.param == "ssh -G" and not HAVE_SSH:
        pytest.skip("no ssh binary on PATH: the ssh -G path cannot run")
    return request.param == "ssh -G"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_options_of_a_host(tmp_path, home, mode):
    kh = tmp_path / "kh"
    config = write(tmp_path / "config", f"""
        Host h1
          HostName 127.0.0.5
          User bob
          Port 2200
          IdentityFile ~/.ssh/id_%h_%r_%p
          IdentityFile {tmp_path}/second_key
          IdentitiesOnly yes
          ProxyJump jump1,alice@jump2:2222
          StrictHostKeyChecking accept-new
          UserKnownHostsFile {kh}/one {kh}/two_%h
          GlobalKnownHostsFile {kh}/global
          ConnectTimeout 7
          ServerAliveInterval 30
          HostKeyAlias Cluster-H1
        """)
    target = resolve("h1", config_file=str(config), use_ssh_binary=mode)
    assert target == SSHTarget(
        alias="h1",
        hostname="127.0.0.5",
        port=2200,
        user="bob",
        identity_files=(f"{home}/.ssh/id_127.0.0.5_bob_2200", f"{tmp_path}/second_key"),
        identities_only=True,
        proxy_jump=("jump1", "alice@jump2:2222"),
        proxy_command=None,
        strict_host_key_checking="accept-new",
        user_known_hosts_files=(f"{kh}/one", f"{kh}/two_127.0.0.5"),
        global_known_hosts_files=(f"{kh}/global",),
        connect_timeout=7.0,
        batch_mode=False,
        server_alive_interval=30.0,
        ciphers=None,
        host_key_alias="cluster-h1",       # ssh lower-cases it, as it does host names
        source="ssh -G" if mode else "paramiko",
    )


def test_defaults_for_an_unconfigured_host(tmp_path, home, mode):
    config = write(tmp_path / "config", """
        Host other
          User nobody
        """)
    target = resolve("Plain.Example", config_file=str(config), use_ssh_binary=mode)
    assert target.alias == "Plain.Example"
    assert target.hostname == "plain.example"
    assert target.port == 22
    assert target.user == getpass.getuser()
    assert target.identity_files[0] == f"{home}/.ssh/id_rsa"
    assert f"{home}/.ssh/id_ed25519" in target.identity_files
    assert not target.identities_only
    assert target.proxy_jump == () and target.proxy_command is None
    assert target.strict_host_key_checking == "ask"
    # ssh takes ~ from the password database, the fallback from $HOME.
    assert [os.path.basename(p) for p in target.user_known_hosts_files] == ["known_hosts", "known_hosts2"]
    assert target.global_known_hosts_files == ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    assert target.connect_timeout is None and target.server_alive_interval is None
    assert not target.batch_mode
    assert target.ciphers is None and target.host_key_alias is None


def test_default_known_hosts_follow_home_in_the_fallback(tmp_path, home):
    config = write(tmp_path / "config", "Host x\n  User y\n")
    target = resolve("x", config_file=str(config), use_ssh_binary=False)
    assert target.user_known_hosts_files == (f"{home}/.ssh/known_hosts", f"{home}/.ssh/known_hosts2")


def test_proxy_command_is_expanded(tmp_path, mode):
    config = write(tmp_path / "config", """
        Host behind
          HostName 10.1.2.3
          Port 2222
          User carol
          ProxyCommand ssh -W %h:%p -l %r gateway # %n %%
        """)
    target = resolve("behind", config_file=str(config), use_ssh_binary=mode)
    assert target.proxy_command == "ssh -W 10.1.2.3:2222 -l carol gateway # behind %"
    assert target.proxy_jump == ()


@pytest.mark.parametrize("first, expect_jump", [("ProxyJump j1", True), ("ProxyCommand nc %h %p", False)])
def test_first_of_proxyjump_and_proxycommand_wins(tmp_path, mode, first, expect_jump):
    second = "ProxyCommand nc %h %p" if expect_jump else "ProxyJump j1"
    config = write(tmp_path / "config", f"Host a\n  {first}\n  {second}\n")
    target = resolve("a", config_file=str(config), use_ssh_binary=mode)
    if expect_jump:
        assert target.proxy_jump == ("j1",) and target.proxy_command is None
    else:
        assert target.proxy_jump == () and target.proxy_command == "nc a 22"


def test_none_disables_proxies_and_known_hosts(tmp_path, mode):
    config = write(tmp_path / "config", """
        Host a
          ProxyJump none
          UserKnownHostsFile none
          IdentityFile none
        Host *
          ProxyJump j1
          ProxyCommand nc %h %p
        """)
    target = resolve("a", config_file=str(config), use_ssh_binary=mode)
    assert target.proxy_jump == ()
    assert target.user_known_hosts_files == ()
    assert target.identity_files == ()


@pytest.mark.parametrize("written, mapped", [
    ("yes", "yes"), ("no", "no"), ("off", "no"), ("ask", "ask"), ("accept-new", "accept-new"),
])
def test_strict_host_key_checking(tmp_path, mode, written, mapped):
    config = write(tmp_path / "config", f"Host a\n  StrictHostKeyChecking {written}\n")
    assert resolve("a", config_file=str(config), use_ssh_binary=mode).strict_host_key_checking == mapped


def test_ciphers_only_when_set(tmp_path, mode):
    config = write(tmp_path / "config", """
        Host fast
          Ciphers aes128-gcm@openssh.com,aes256-ctr
        """)
    assert resolve("fast", config_file=str(config), use_ssh_binary=mode).ciphers == (
        "aes128-gcm@openssh.com", "aes256-ctr")
    assert resolve("slow", config_file=str(config), use_ssh_binary=mode).ciphers is None


def test_batch_mode_implies_server_alive(tmp_path, mode):
    config = write(tmp_path / "config", "Host a\n  BatchMode yes\n  ConnectTimeout 1m5s\n")
    target = resolve("a", config_file=str(config), use_ssh_binary=mode)
    assert target.batch_mode
    assert target.server_alive_interval == 300.0      # OpenSSH's default in batch mode
    assert target.connect_timeout == 65.0


def test_explicit_user_and_port_override_config(tmp_path, mode):
    config = write(tmp_path / "config", """
        Host node03
          User configured
          Port 2200
          IdentityFile /keys/%r_%p
        """)
    target = resolve("node03", user="alice", port=2222, config_file=str(config), use_ssh_binary=mode)
    assert (target.user, target.port) == ("alice", 2222)
    assert target.identity_files == ("/keys/alice_2222",)
    plain = resolve("node03", config_file=str(config), use_ssh_binary=mode)
    assert (plain.user, plain.port) == ("configured", 2200)


def test_include_absolute_and_glob_with_openssh_scoping(tmp_path, mode):
    inc = tmp_path / "inc"
    write(inc / "top.conf", """
        Host c
          HostName c.internal
        """)
    write(inc / "for_ab.conf", """
        IdentityFile /keys/ab
        Host b
          HostName b.internal
        Host *
          BatchMode yes
        Host c
          HostName never.internal
        """)
    write(inc / "conf.d" / "10-user.conf", "User globuser\n")
    write(inc / "conf.d" / "20-host.conf", "Host *\n  HostName x.internal\n")
    write(inc / "conf.d" / "ignored.txt", "User wrong\n")
    config = write(tmp_path / "config", f"""
        Include {inc}/top.conf
        Host a b
          Include {inc}/for_ab.conf
          User abuser
        Host x
          Include {inc}/conf.d/*.conf {inc}/missing.conf
        Host *
          Port 2000
        """)

    def get(host):
        return resolve(host, config_file=str(config), use_ssh_binary=mode)

    a, b, c, d, x = get("a"), get("b"), get("c"), get("d"), get("x")
    # Included lines apply only within the block that included them ...
    assert (a.hostname, a.user, a.identity_files, a.batch_mode) == ("a", "abuser", ("/keys/ab",), True)
    assert (b.hostname, b.user, b.batch_mode) == ("b.internal", "abuser", True)
    # ... even the included file's own Host blocks, and the block resumes after it.
    assert (c.hostname, c.batch_mode, c.user) == ("c.internal", False, getpass.getuser())
    assert (d.hostname, d.batch_mode) == ("d", False)
    assert (x.hostname, x.user) == ("x.internal", "globuser")
    assert {t.port for t in (a, b, c, d, x)} == {2000}


def test_relative_include_is_relative_to_dot_ssh(home, tmp_path):
    # Only the fallback: ssh takes ~/.ssh from the password database, not $HOME, and
    # the user's real ~/.ssh must not be touched.
    write(home / ".ssh" / "extra.conf", "Host r\n  HostName r.internal\n")
    write(home / ".ssh" / "conf.d" / "a.conf", "Host s\n  Port 2022\n")
    config = write(tmp_path / "config", "Include extra.conf conf.d/*.conf\n")
    assert resolve("r", config_file=str(config), use_ssh_binary=False).hostname == "r.internal"
    assert resolve("s", config_file=str(config), use_ssh_binary=False).port == 2022


def test_default_config_file_in_fallback(home):
    write(home / ".ssh" / "config", "Host dflt\n  HostName dflt.internal\n  Include more\n")
    write(home / ".ssh" / "more", "User moreuser\n")
    target = resolve("dflt", use_ssh_binary=False)
    assert (target.hostname, target.user) == ("dflt.internal", "moreuser")


def test_missing_default_config_is_empty(home):
    assert resolve("nothing", use_ssh_binary=False).hostname == "nothing"


def test_include_loop_is_an_error(tmp_path, mode):
    write(tmp_path / "b.conf", f"Include {tmp_path}/a.conf\n")
    config = write(tmp_path / "a.conf", f"Host *\n  Include {tmp_path}/b.conf\n")
    with pytest.raises(SSHConfigError) as info:
        resolve("h", config_file=str(config), use_ssh_binary=mode)
    if not mode:
        assert "loop" in info.value.message and "a.conf" in info.value.message


def test_include_depth_limit(tmp_path):
    for i in range(20):
        write(tmp_path / f"c{i}.conf", f"Include {tmp_path}/c{i + 1}.conf\n")
    with pytest.raises(SSHConfigError, match="deeper than 16"):
        resolve("h", config_file=str(tmp_path / "c0.conf"), use_ssh_binary=False)


@pytest.mark.parametrize("body", ["Host h1\n  HostName\n", "Host h1\n  Port abc\n"])
def test_broken_config_gives_a_hint(tmp_path, mode, body):
    config = write(tmp_path / "config", body)
    with pytest.raises(SSHConfigError) as info:
        resolve("h1", config_file=str(config), use_ssh_binary=mode)
    error = info.value
    assert isinstance(error, ClusterError)
    assert error.hint
    if mode:
        assert error.hint.startswith("run: ssh -G")
        assert "h1" in error.hint and str(config) in error.hint
        assert "config" in error.message       # ssh's own first line names the file


def test_missing_explicit_config_file(tmp_path, mode):
    with pytest.raises(SSHConfigError):
        resolve("h1", config_file=str(tmp_path / "nope"), use_ssh_binary=mode)


@pytest.mark.parametrize("host", ["-oProxyCommand=touch x", "a b", ""])
def test_refuses_hosts_ssh_would_misread(tmp_path, host):
    with pytest.raises(SSHConfigError):
        resolve(host, config_file=str(tmp_path / "nope"))


def test_results_are_cached_per_target(tmp_path, mode):
    config = write(tmp_path / "config", "Host a\n  Port 2001\n")
    first = resolve("a", config_file=str(config), use_ssh_binary=mode)
    assert resolve("a", config_file=str(config), use_ssh_binary=mode) is first
    assert resolve("a", port=2003, config_file=str(config), use_ssh_binary=mode).port == 2003
    sshconfig.clear_cache()
    assert resolve("a", config_file=str(config), use_ssh_binary=mode) is not first


def test_insisting_on_ssh_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh there
    with pytest.raises(SSHConfigError, match="no ssh"):
        resolve("a", config_file=str(tmp_path / "c"), use_ssh_binary=True)
    write(tmp_path / "c", "Host a\n  Port 2001\n")
    assert resolve("a", config_file=str(tmp_path / "c")).source == "paramiko"


def test_match_user_sees_the_configured_user(tmp_path, mode):
    config = write(tmp_path / "config", """
        Host m1
          User ops
        Match user ops
          Port 2500
        """)
    assert resolve("m1", config_file=str(config), use_ssh_binary=mode).port == 2500
    assert resolve("m2", config_file=str(config), use_ssh_binary=mode).port == 22


@pytest.mark.parametrize("written, verbatim", [
    ("+ssh-rsa", False), ("-ssh-ed25519", False), ("^rsa-sha2-512", True),
    ("rsa-sha2-256,ssh-ed25519", True),
])
def test_host_key_algorithms(tmp_path, mode, written, verbatim):
    config = write(tmp_path / "config", f"Host a\n  HostKeyAlgorithms {written}\n")
    target = resolve("a", config_file=str(config), use_ssh_binary=mode)
    default = sshconfig.DEFAULT_HOST_KEY_ALGORITHMS
    expected = {
        "+ssh-rsa": default + ("ssh-rsa",),
        "-ssh-ed25519": tuple(a for a in default if a != "ssh-ed25519"),
        "^rsa-sha2-512": ("rsa-sha2-512",) + tuple(a for a in default if a != "rsa-sha2-512"),
        "rsa-sha2-256,ssh-ed25519": ("rsa-sha2-256", "ssh-ed25519"),
    }[written]
    assert target.host_key_algorithms == expected
    assert target.host_key_algorithms_verbatim is verbatim
    other = resolve("b", config_file=str(config), use_ssh_binary=mode)
    assert other.host_key_algorithms is None and not other.host_key_algorithms_verbatim


def test_default_host_key_algorithms_are_openssh_s(tmp_path):
    if not HAVE_SSH:
        pytest.skip("no ssh binary on PATH")
    config = write(tmp_path / "config", "Host a\n  User b\n")
    printed = sshconfig._run_ssh_g(["ssh", "-G", "-F", str(config), "a"], "a")["hostkeyalgorithms"][0]
    assert tuple(printed.split(",")) == sshconfig.DEFAULT_HOST_KEY_ALGORITHMS


@pytest.mark.parametrize("written, hashed", [(None, False), ("yes", True), ("no", False)])
def test_hash_known_hosts(tmp_path, mode, written, hashed):
    body = f"Host a\n  HashKnownHosts {written}\n" if written else "Host a\n  User b\n"
    config = write(tmp_path / "config", body)
    assert resolve("a", config_file=str(config), use_ssh_binary=mode).hash_known_hosts is hashed


def test_an_edited_config_is_read_again_by_a_long_lived_process(tmp_path, home, mode):
    """The hub lives for hours and resolves hosts for every command: an edit of
    ~/.ssh/config (or the -F file) is seen at once, without clearing any cache."""
    places = [(str(tmp_path / "f"), tmp_path / "f")]
    if not mode:  # (ssh -G reads the passwd entry's home, not $HOME: not a test's to write)
        places.append((None, home / ".ssh" / "config"))
    for config, path in places:
        write(path, "Host box\n  HostName 192.0.2.1\n  Port 2001\n")
        assert resolve("box", config_file=config, use_ssh_binary=mode).port == 2001
        write(path, "Host box\n  HostName 192.0.2.1\n  Port 2002\n")
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        assert resolve("box", config_file=config, use_ssh_binary=mode).port == 2002
