"""known_hosts with OpenSSH's semantics: matching, changed and revoked keys, appending.

Where OpenSSH's own tools exist they are the reference: ``ssh-keygen -l`` for
fingerprints, ``ssh-keygen -H`` for hashed entries, ``ssh-keygen -F`` for which lines
match a host. ``HOME`` points into the test's temporary directory. The only network
use is one paramiko server on 127.0.0.1, to show the paramiko integration end to end.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import multiprocessing
import os
import pickle
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from clusterctl.errors import HandshakeError, NodeError
from clusterctl.transport.hostkeys import (
    ChangedHostKey,
    HostKeyError,
    HostKeyPolicy,
    KnownHosts,
    RevokedHostKey,
    UnknownHostKey,
    fingerprint,
    hash_host,
    host_label,
    offered_host_key_algorithms,
    order_host_key_algorithms,
    verify_server_key,
)
from clusterctl.transport.sshconfig import DEFAULT_HOST_KEY_ALGORITHMS

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="no ssh-keygen on PATH")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(scope="module")
def keys() -> dict[str, paramiko.PKey]:
    """Two ECDSA and one RSA key (paramiko cannot generate Ed25519 keys)."""
    return {"ecdsa": paramiko.ECDSAKey.generate(), "ecdsa2": paramiko.ECDSAKey.generate(),
            "rsa": paramiko.RSAKey.generate(1024)}


@pytest.fixture(scope="module")
def ed25519(tmp_path_factory) -> tuple[paramiko.PKey, Path]:
    if SSH_KEYGEN is None:
        pytest.skip("no ssh-keygen on PATH: cannot make an Ed25519 key")
    path = tmp_path_factory.mktemp("ed") / "key"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    kind, data = path.with_suffix(".pub").read_text().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data)), path.with_suffix(".pub")


def line(hosts: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{hosts} {key.get_name()} {key.get_base64()}\n"


def known(tmp_path: Path, text: str, **kwargs) -> KnownHosts:
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return KnownHosts([str(path)], **kwargs)


# --------------------------------------------------------------------------- basics

def test_fingerprint_like_openssh(keys):
    key = keys["ecdsa"]
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    assert fingerprint(key) == "SHA256:" + digest == key.fingerprint


@needs_keygen
def test_fingerprint_equals_ssh_keygen(ed25519, keys, tmp_path):
    key, pub = ed25519
    out = subprocess.run([SSH_KEYGEN, "-lf", str(pub)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == fingerprint(key)
    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_text(f"ssh-rsa {keys['rsa'].get_base64()}\n")
    out = subprocess.run([SSH_KEYGEN, "-lf", str(rsa_pub)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == fingerprint(keys["rsa"])


def test_host_label():
    assert host_label("h1", 22) == "h1"
    assert host_label("127.0.0.1", 2222) == "[127.0.0.1]:2222"
    assert host_label("fe80::1", 22) == "fe80::1"
    assert host_label("fe80::1", 2200) == "[fe80::1]:2200"


def test_error_classes(tmp_path, keys):
    assert issubclass(HostKeyError, HandshakeError) and issubclass(HostKeyError, NodeError)
    for cls in (UnknownHostKey, ChangedHostKey, RevokedHostKey):
        assert issubclass(cls, HostKeyError)
    kh = known(tmp_path, line("h1", keys["ecdsa2"]))
    with pytest.raises(ChangedHostKey) as info:
        kh.check("n1", "h1", 22, keys["ecdsa"])
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ChangedHostKey
    assert (copy.node, copy.line, copy.one_line()) == ("n1", 1, info.value.one_line())


# --------------------------------------------------------------------------- matching

def test_plain_entry_known_and_unknown(tmp_path, keys):
    kh = known(tmp_path, line("h1", keys["ecdsa"]))
    assert kh.check("n1", "h1", 22, keys["ecdsa"]) == "known"
    assert kh.check("n1", "H1", 22, keys["ecdsa"]) == "known"     # ssh lower-cases host names
    with pytest.raises(UnknownHostKey) as info:
        kh.check("n1", "198.18.0.11", 22, keys["ecdsa"])
    error = info.value
    assert error.node == "n1" and error.host_label == "198.18.0.11"
    assert error.key_type == "ECDSA" and error.fingerprint == fingerprint(keys["ecdsa"])
    assert error.known_hosts_file == str(tmp_path / "known_hosts")
    assert error.message == f"host key of n1 ([198.18.0.11]:22) is not known: ECDSA {fingerprint(keys['ecdsa'])}"
    assert error.hint == ("run clusterctl with --accept-new-host-keys, "
                          "or 'ssh 198.18.0.11' once to check and trust it")


@needs_keygen
def test_unknown_message_for_ed25519(tmp_path, ed25519):
    key, _ = ed25519
    kh = known(tmp_path, "")
    with pytest.raises(UnknownHostKey) as info:
        kh.check("h1", "198.18.0.11", 22, key, ssh_target="h1")
    assert info.value.one_line() == (
        f"host key of h1 ([198.18.0.11]:22) is not known: ED25519 {fingerprint(key)} "
        "(run clusterctl with --accept-new-host-keys, or 'ssh h1' once to check and trust it)")


def test_port_entries(tmp_path, keys):
    kh = known(tmp_path, line("[127.0.0.1]:2222", keys["ecdsa"]) + line("127.0.0.2", keys["ecdsa"]))
    assert kh.check("n", "127.0.0.1", 2222, keys["ecdsa"]) == "known"
    for host, port in (("127.0.0.1", 22), ("127.0.0.1", 2223), ("127.0.0.2", 2222)):
        with pytest.raises(UnknownHostKey) as info:
            kh.check("n", host, port, keys["ecdsa"])
        assert info.value.host_label == host_label(host, port)
    with pytest.raises(UnknownHostKey) as info:
        kh.check("n", "127.0.0.2", 2222, keys["ecdsa"])
    assert "'ssh -p 2222 127.0.0.2'" in info.value.hint


def test_hashed_entry_made_like_openssh(tmp_path, keys):
    salt = os.urandom(20)
    digest = hmac.new(salt, b"[127.0.0.1]:2222", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    assert hash_host("[127.0.0.1]:2222", salt) == hashed
    kh = known(tmp_path, line(hashed, keys["ecdsa"]) + line(hash_host("h9"), keys["rsa"]))
    assert kh.check("n", "127.0.0.1", 2222, keys["ecdsa"]) == "known"
    assert kh.check("n", "h9", 22, keys["rsa"]) == "known"
    with pytest.raises(UnknownHostKey):
        kh.check("n", "127.0.0.1", 22, keys["ecdsa"])
    with pytest.raises(ChangedHostKey) as info:
        kh.check("n", "127.0.0.1", 2222, keys["ecdsa2"])
    assert info.value.line == 1


@needs_keygen
def test_hashed_by_ssh_keygen(tmp_path, keys, ed25519):
    path = tmp_path / "known_hosts"
    path.write_text(line("h1", keys["ecdsa"]) + line("[127.0.0.1]:2222", ed25519[0])
                    + line("other", keys["rsa"]))
    subprocess.run([SSH_KEYGEN, "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    assert path.read_text().startswith("|1|")
    kh = KnownHosts([str(path)])
    assert kh.check("n", "h1", 22, keys["ecdsa"]) == "known"
    assert kh.check("n", "127.0.0.1", 2222, ed25519[0]) == "known"
    with pytest.raises(ChangedHostKey) as info:
        kh.check("n", "other", 22, paramiko.RSAKey.generate(1024))
    assert info.value.line == 3


PATTERN_FILE = ("*.example.org,!bad.example.org {k}\n"
                "[10.0.0.*]:2222 {k}\n"
                "Node?? {k}\n"
                "!x1,x? {k}\n")
PATTERN_CASES = [
    ("a.example.org", 22, True), ("bad.example.org", 22, False), ("example.org", 22, False),
    ("10.0.0.5", 2222, True), ("10.0.0.5", 22, False), ("10.0.0.5", 2223, False),
    ("node01", 22, True), ("NODE01", 22, True), ("node1", 22, False), ("node001", 22, False),
    ("x2", 22, True), ("x1", 22, False),
]


@pytest.mark.parametrize("host, port, expected", PATTERN_CASES)
def test_wildcards_and_negation(tmp_path, keys, host, port, expected):
    key = keys["ecdsa"]
    kh = known(tmp_path, PATTERN_FILE.format(k=f"{key.get_name()} {key.get_base64()}"))
    if expected:
        assert kh.check("n", host, port, key) == "known"
    else:
        with pytest.raises(UnknownHostKey):
            kh.check("n", host, port, key)


@needs_keygen
def test_matching_agrees_with_ssh_keygen(tmp_path, keys):
    key = keys["ecdsa"]
    path = tmp_path / "known_hosts"
    path.write_text(PATTERN_FILE.format(k=f"{key.get_name()} {key.get_base64()}"))
    for host, port, expected in PATTERN_CASES:
        found = subprocess.run([SSH_KEYGEN, "-F", host_label(host, port), "-f", str(path)],
                               capture_output=True).returncode == 0
        assert found is expected, (host, port)


# --------------------------------------------------------------------------- refusals

def test_changed_key_names_file_and_line(tmp_path, home, keys):
    path = home / ".ssh" / "known_hosts"
    path.parent.mkdir()
    path.write_text("# my hosts\n\n" + line("other", keys["ecdsa2"]) + line("h2", keys["rsa"])
                    + line("h1,198.18.0.11", keys["ecdsa2"]))
    kh = KnownHosts([str(path)])
    with pytest.raises(ChangedHostKey) as info:
        kh.check("h1", "198.18.0.11", 22, keys["ecdsa"])
    error = info.value
    old, new = fingerprint(keys["ecdsa2"]), fingerprint(keys["ecdsa"])
    assert (error.known_hosts_file, error.line) == (str(path), 5)
    assert (error.old_fingerprint, error.new_fingerprint, error.key_type) == (old, new, "ECDSA")
    assert error.message == (f"HOST KEY OF h1 CHANGED: ~/.ssh/known_hosts:5 has another ECDSA key "
                             f"({old}), the host offers {new}")
    assert error.hint == ("if the host was reinstalled, remove the old key: "
                          "ssh-keygen -R 198.18.0.11 -f ~/.ssh/known_hosts")


def test_changed_key_with_port_quotes_the_label(tmp_path, keys):
    kh = known(tmp_path, line("[127.0.0.1]:2222", keys["ecdsa2"]))
    with pytest.raises(ChangedHostKey) as info:
        kh.check("n", "127.0.0.1", 2222, keys["ecdsa"])
    assert f"ssh-keygen -R '[127.0.0.1]:2222' -f {tmp_path}/known_hosts" in info.value.hint


def test_other_key_type_is_unknown_not_changed(tmp_path, keys):
    kh = known(tmp_path, line("h1", keys["rsa"]))
    with pytest.raises(UnknownHostKey):
        kh.check("n", "h1", 22, keys["ecdsa"])


def test_a_matching_line_anywhere_wins_over_a_changed_one(tmp_path, keys):
    global_file = tmp_path / "global"
    global_file.write_text(line("h1", keys["ecdsa"]))
    user_file = tmp_path / "user"
    user_file.write_text(line("h*", keys["ecdsa2"]))
    kh = KnownHosts([str(user_file)], global_files=[str(global_file)])
    assert kh.check("n", "h1", 22, keys["ecdsa"]) == "known"
    with pytest.raises(ChangedHostKey) as info:
        kh.check("n", "h1", 22, paramiko.ECDSAKey.generate())
    assert info.value.known_hosts_file == str(user_file)


def test_changed_key_refused_in_every_mode(tmp_path, keys):
    path = tmp_path / "known_hosts"
    kh = known(tmp_path, "# first\n" + line("other", keys["rsa"]) + line("h1", keys["ecdsa2"]))
    before, stat_before = path.read_bytes(), path.stat()
    for mode in ("yes", "no", "accept-new", "ask"):
        with pytest.raises(ChangedHostKey) as info:
            verify_server_key(kh, "n", "h1", 22, keys["ecdsa"], mode, accept_unknown=True)
        assert (info.value.known_hosts_file, info.value.line) == (str(path), 3)
        assert f"{path}:3 has another ECDSA key" in info.value.message
    stat_after = path.stat()
    assert path.read_bytes() == before               # neither appended to nor rewritten
    assert (stat_after.st_ino, stat_after.st_mtime_ns) == (stat_before.st_ino, stat_before.st_mtime_ns)


def test_revoked_key_refused(tmp_path, keys):
    kh = known(tmp_path, line("*", keys["ecdsa"], "@revoked") + line("h1", keys["ecdsa"]))
    for mode in ("yes", "no", "accept-new"):
        with pytest.raises(RevokedHostKey) as info:
            verify_server_key(kh, "n", "h1", 22, keys["ecdsa"], mode)
        assert info.value.line == 1 and "revoked" in info.value.message
    with pytest.raises(ChangedHostKey):          # the revoked line is not "another key"
        kh.check("n", "h1", 22, keys["ecdsa2"])


def test_cert_authority_and_junk_lines_are_skipped(tmp_path, keys):
    kh = known(tmp_path, line("*", keys["ecdsa"], "@cert-authority")
               + "h1 ssh-ed25519 not-base64!!\n"
               + f"h1 ssh-rsa {keys['ecdsa'].get_base64()}\n"     # type and key disagree
               + "h1\n@unknown-marker h1 x y\n"
               + f"h1 sk-ssh-ed25519@openssh.com {base64.b64encode(b'junk').decode()}\n")
    with pytest.raises(UnknownHostKey):
        kh.check("n", "h1", 22, keys["ecdsa"])
    assert len(kh.entries()) == 1 and kh.entries()[0].marker == "@cert-authority"


def test_host_key_alias(tmp_path, keys):
    kh = known(tmp_path, line("cluster-h1", keys["ecdsa"]))
    assert kh.check("n", "10.0.0.1", 2222, keys["ecdsa"], host_key_alias="Cluster-H1") == "known"
    with pytest.raises(UnknownHostKey) as info:
        kh.check("n", "10.0.0.1", 2222, keys["rsa"], host_key_alias="cluster-h1")
    assert info.value.host_label == "cluster-h1"
    assert verify_server_key(kh, "n", "10.0.0.1", 2222, keys["rsa"], "accept-new",
                             host_key_alias="cluster-h1") == "added"
    assert (tmp_path / "known_hosts").read_text().endswith(line("cluster-h1", keys["rsa"]))


# --------------------------------------------------------------------------- verify modes

def test_modes_for_an_unknown_key(tmp_path, keys):
    path = tmp_path / "sub" / "known_hosts"
    kh = KnownHosts([str(path)])
    key = keys["ecdsa"]
    for mode in ("yes", "ask"):
        with pytest.raises(UnknownHostKey) as info:
            verify_server_key(kh, "n", "127.0.0.1", 2222, key, mode)
        assert info.value.known_hosts_file == str(path)
    assert verify_server_key(kh, "n", "127.0.0.1", 2222, key, "no") == "accepted"
    assert not path.exists()
    assert verify_server_key(kh, "n", "127.0.0.1", 2222, key, "ask", accept_unknown=True) == "added"
    assert verify_server_key(kh, "n", "127.0.0.1", 2222, key, "yes") == "known"
    assert verify_server_key(kh, "n", "127.0.0.2", 22, key, "accept-new") == "added"
    assert path.read_text() == line("[127.0.0.1]:2222", key) + line("127.0.0.2", key)
    with pytest.raises(ValueError):
        verify_server_key(kh, "n", "127.0.0.1", 22, key, "maybe")


def test_accept_new_without_a_user_file(keys, tmp_path):
    global_file = tmp_path / "global"
    for kh in (KnownHosts([], global_files=[str(global_file)]),
               KnownHosts([str(global_file)], write_file=None)):     # explicit: never write
        assert kh.write_file is None
        assert verify_server_key(kh, "n", "h1", 22, keys["ecdsa"], "accept-new") == "accepted"
    assert not global_file.exists()
    assert KnownHosts(["~/a", "/b"]).write_file == os.path.expanduser("~/a")


def test_unwritable_file_is_a_host_key_error(tmp_path, keys):
    kh = KnownHosts([str(tmp_path / "dir-not-file" / "x")], write_file=str(tmp_path))
    with pytest.raises(HostKeyError, match="could not add"):
        verify_server_key(kh, "n", "h1", 22, keys["ecdsa"], "accept-new")


def test_strict_yes_refuses_whatever_the_caller_accepts(tmp_path, keys):
    path = tmp_path / "known_hosts"
    kh = known(tmp_path, "")
    with pytest.raises(UnknownHostKey) as info:
        verify_server_key(kh, "n1", "198.18.0.11", 22, keys["ecdsa"], "yes", accept_unknown=True,
                          ssh_target="h1")
    error = info.value
    assert error.message == (f"host key of n1 ([198.18.0.11]:22) is not known: ECDSA "
                             f"{fingerprint(keys['ecdsa'])}, and the ssh config says StrictHostKeyChecking yes")
    assert "--accept-new-host-keys does not override" in error.hint
    assert f"add it to {path}" in error.hint and "'ssh -o StrictHostKeyChecking=ask h1'" in error.hint
    assert error.known_hosts_file == str(path) and error.host_label == "198.18.0.11"
    assert path.read_text() == ""


# --------------------------------------------------------------------------- algorithms

PLAIN_DEFAULT = tuple(a for a in DEFAULT_HOST_KEY_ALGORITHMS if "-cert-" not in a)


@pytest.mark.parametrize("recorded, first", [
    (set(), "ssh-ed25519"),
    ({"ssh-ed25519"}, "ssh-ed25519"),
    ({"ecdsa-sha2-nistp256"}, "ecdsa-sha2-nistp256"),
    ({"ecdsa-sha2-nistp384"}, "ecdsa-sha2-nistp384"),
    ({"ssh-rsa"}, "rsa-sha2-512"),
    ({"ssh-rsa", "ecdsa-sha2-nistp256"}, "ecdsa-sha2-nistp256"),
])
def test_recorded_key_types_are_offered_first(recorded, first):
    order = order_host_key_algorithms(recorded, DEFAULT_HOST_KEY_ALGORITHMS)
    assert order[0] == first
    assert sorted(order) == sorted(PLAIN_DEFAULT)          # the same algorithms, no certificates
    promoted = [a for a in PLAIN_DEFAULT if ("ssh-rsa" if a.startswith("rsa-sha2-") else a) in recorded]
    assert list(order[:len(promoted)]) == promoted         # recorded ones first, in the list's order
    rest = [a for a in PLAIN_DEFAULT if a not in promoted]
    assert list(order[len(promoted):]) == rest


def test_recorded_rsa_key_offers_sha2_then_ssh_rsa():
    listed = PLAIN_DEFAULT + ("ssh-rsa",)                   # HostKeyAlgorithms +ssh-rsa
    order = order_host_key_algorithms({"ssh-rsa"}, listed)
    assert order[:3] == ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
    assert order[3] == "ssh-ed25519"


def test_verbatim_host_key_algorithms_are_not_reordered():
    listed = ("ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519", "rsa-sha2-256", "ecdsa-sha2-nistp256")
    assert order_host_key_algorithms({"ecdsa-sha2-nistp256"}, listed, verbatim=True) == listed[1:]
    assert order_host_key_algorithms({"ecdsa-sha2-nistp256"}, listed) == (
        "ecdsa-sha2-nistp256", "ssh-ed25519", "rsa-sha2-256")


def test_recorded_types_follow_lookup_and_skip_marked_lines(tmp_path, keys):
    kh = known(tmp_path, line("*", keys["ecdsa2"], "@cert-authority")
               + line("h1", keys["rsa"], "@revoked")
               + line(hash_host("[127.0.0.1]:2222"), keys["rsa"])
               + line("h2,!h3", keys["ecdsa"])
               + line("cluster-h1", keys["ecdsa"]))
    assert kh.recorded_key_types("h1", 22) == set()
    assert kh.recorded_key_types("127.0.0.1", 2222) == {"ssh-rsa"}
    assert kh.recorded_key_types("127.0.0.1", 22) == set()
    assert kh.recorded_key_types("H2", 22) == {"ecdsa-sha2-nistp256"}
    assert kh.recorded_key_types("h3", 22) == set()
    assert kh.recorded_key_types("10.0.0.1", 22, host_key_alias="Cluster-H1") == {"ecdsa-sha2-nistp256"}
    offered = offered_host_key_algorithms(kh, "127.0.0.1", 2222, DEFAULT_HOST_KEY_ALGORITHMS)
    assert offered[:2] == ("rsa-sha2-512", "rsa-sha2-256")
    assert set(offered) <= set(paramiko.Transport._key_info)
    assert "sk-ssh-ed25519@openssh.com" not in offered      # paramiko cannot verify those
    assert offered_host_key_algorithms(kh, "h1", 22, ["sk-ecdsa-sha2-nistp256@openssh.com"]) == ()


def test_paramiko_gets_the_recorded_key_of_a_host_with_two(tmp_path, keys):
    """A paramiko server with an ECDSA and an RSA key, known_hosts holding the RSA one:
    offering the ordered algorithms makes it show the RSA key."""
    kh = known(tmp_path, line("[127.0.0.1]:2200", keys["rsa"]))
    port, thread = _serve(keys["ecdsa"], keys["rsa"])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.get_security_options().key_types = offered_host_key_algorithms(
            kh, "127.0.0.1", 2200, DEFAULT_HOST_KEY_ALGORITHMS)
        transport.start_client(timeout=10)
        offered = transport.get_remote_server_key()
        assert verify_server_key(kh, "n", "127.0.0.1", 2200, offered, "yes") == "known"
    finally:
        transport.close()
        thread.join(15)


# --------------------------------------------------------------------------- appending

@needs_keygen
def test_hashed_append_is_found_by_ssh_keygen(tmp_path, keys):
    path = tmp_path / "known_hosts"
    path.write_text("# mine\n")
    kh = KnownHosts([str(path)])
    assert verify_server_key(kh, "n", "127.0.0.1", 2222, keys["ecdsa"], "accept-new",
                             hash_names=True) == "added"
    kh.append("h1", 22, keys["rsa"], hashed=True)
    kh.append("h1", 22, keys["rsa"], hashed=True)          # already there: the hash matches
    lines = path.read_text().splitlines()
    assert lines[0] == "# mine" and len(lines) == 3
    hosts = [entry.split()[0] for entry in lines[1:]]  # (the key's base64 may hold "h1")
    assert all(h.startswith("|1|") and h.count("|") == 3 for h in hosts), hosts
    assert kh.check("n", "127.0.0.1", 2222, keys["ecdsa"]) == "known"
    for label, entry in (("[127.0.0.1]:2222", lines[1]), ("h1", lines[2])):
        found = subprocess.run([SSH_KEYGEN, "-F", label, "-f", str(path)], capture_output=True, text=True)
        assert found.returncode == 0 and entry in found.stdout



def test_append_creates_dot_ssh_and_file_private(home, keys):
    path = home / ".ssh" / "known_hosts"
    kh = KnownHosts(["~/.ssh/known_hosts"])
    kh.append("H1", 22, keys["ecdsa"])
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == line("h1", keys["ecdsa"])


def test_append_keeps_everything_byte_for_byte(tmp_path, keys):
    original = ("# managed by hand\r\n"
                + line("*.corp", keys["ecdsa2"], "@cert-authority")
                + "  \n"
                + "|1|bm90IGEgcmVhbCBzYWx0|aGFzaA== ssh-unknown-type AAAA  trailing comment\n"
                + line("h2", keys["rsa"]).rstrip("\n"))              # no final newline
    path = tmp_path / "known_hosts"
    path.write_bytes(original.encode())
    kh = KnownHosts([str(path)])
    kh.append("127.0.0.1", 2222, keys["ecdsa"])
    assert path.read_bytes() == (original + "\n" + line("[127.0.0.1]:2222", keys["ecdsa"])).encode()
    kh.append("127.0.0.1", 2222, keys["ecdsa"])                        # already there: no-op
    kh.append("h3", 22, keys["ecdsa"])
    assert path.read_bytes() == (original + "\n" + line("[127.0.0.1]:2222", keys["ecdsa"])
                                 + line("h3", keys["ecdsa"])).encode()


def test_append_seen_by_a_long_lived_reader(tmp_path, keys):
    path = tmp_path / "known_hosts"
    reader = KnownHosts([str(path)])
    with pytest.raises(UnknownHostKey):
        reader.check("n", "h1", 22, keys["ecdsa"])
    KnownHosts([str(path)]).append("h1", 22, keys["ecdsa"])
    assert reader.check("n", "h1", 22, keys["ecdsa"]) == "known"


def test_append_waits_for_the_lock_and_rereads(tmp_path, keys):
    path = tmp_path / "known_hosts"
    path.write_text("")
    key = keys["ecdsa"]
    with open(path, "ab") as holder:           # another appender, mid-append
        fcntl.flock(holder, fcntl.LOCK_EX)
        thread = threading.Thread(target=KnownHosts([str(path)]).append, args=("h1", 22, key))
        thread.start()
        time.sleep(0.2)
        assert path.read_text() == ""           # it waits for the lock ...
        holder.write(line("h1", key).encode())
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_UN)
    thread.join(10)
    assert path.read_text() == line("h1", key)  # ... and then sees the line is there


def _appender(path: str, blobs: list[bytes], start, rounds: int) -> None:
    kh = KnownHosts([path])
    keys = [paramiko.PKey.from_type_string("ecdsa-sha2-nistp256", blob) for blob in blobs]
    start.wait(10)
    for _ in range(rounds):
        verify_server_key(kh, "n", "127.0.0.1", 2222, keys[0], "accept-new")
        for i, key in enumerate(keys):
            kh.append("host%d" % i, 22, key)


def test_concurrent_appends_write_each_entry_once(tmp_path):
    keys = [paramiko.ECDSAKey.generate() for _ in range(5)]
    blobs = [k.asbytes() for k in keys]
    path = tmp_path / "known_hosts"
    path.write_text("# shared\n")
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_appender, args=(str(path), blobs, start, 20)) for _ in range(2)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    lines = path.read_text().splitlines()
    assert lines[0] == "# shared"
    expected = {line("[127.0.0.1]:2222", keys[0]).strip()} | {
        line("host%d" % i, k).strip() for i, k in enumerate(keys)}
    assert sorted(lines[1:]) == sorted(expected)


# --------------------------------------------------------------------------- paramiko

def test_policy_asks_only_in_ask_mode(tmp_path, keys):
    path = tmp_path / "known_hosts"
    asked = []

    def answer(yes):
        def on_unknown(error):
            asked.append(error.host_label)
            return yes
        return on_unknown

    kh = KnownHosts([str(path)])
    with pytest.raises(UnknownHostKey):
        HostKeyPolicy(kh, "n", 2222, "yes", answer(True)).missing_host_key(None, "[127.0.0.1]:2222", keys["ecdsa"])
    assert asked == []
    with pytest.raises(UnknownHostKey):
        HostKeyPolicy(kh, "n", 2222, "ask", answer(False)).missing_host_key(None, "[127.0.0.1]:2222", keys["ecdsa"])
    policy = HostKeyPolicy(kh, "n", 2222, "ask", answer(True))
    policy.missing_host_key(None, "[127.0.0.1]:2222", keys["ecdsa"])
    assert policy.result == "added" and asked == ["[127.0.0.1]:2222", "[127.0.0.1]:2222"]
    assert path.read_text() == line("[127.0.0.1]:2222", keys["ecdsa"])
    with pytest.raises(UnknownHostKey):
        HostKeyPolicy(kh, "n", 22, "ask").verify("127.0.0.1", keys["ecdsa"])   # nobody to ask


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username):
        return "password"

    def check_auth_password(self, username, password):
        return paramiko.AUTH_SUCCESSFUL


def _serve(*host_keys: paramiko.PKey):
    """A paramiko SSH server on 127.0.0.1 for one connection; returns (port, thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def run():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.close()
        transport = paramiko.Transport(conn)
        for host_key in host_keys:
            transport.add_server_key(host_key)
        try:
            transport.start_server(server=_Server())
            transport.accept(5)
            transport.join(10)
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            transport.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def _connect(port: int, policy: HostKeyPolicy) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(policy)      # no host keys loaded into paramiko
    try:
        client.connect("127.0.0.1", port=port, username="u", password="p", timeout=10,
                       allow_agent=False, look_for_keys=False)
    finally:
        client.close()


def test_with_paramiko_client_and_transport(tmp_path, keys):
    kh = KnownHosts([str(tmp_path / "known_hosts")])
    port, thread = _serve(keys["ecdsa"])
    with pytest.raises(UnknownHostKey):
        _connect(port, HostKeyPolicy(kh, "n", port, "yes"))
    thread.join(15)

    port, thread = _serve(keys["ecdsa"])
    policy = HostKeyPolicy(kh, "n", port, "accept-new")
    _connect(port, policy)
    thread.join(15)
    assert policy.result == "added"

    # The same host (by its known_hosts label) now offers another key: our error, with
    # file and line, not paramiko's BadHostKeyException. Checked on the transport, as
    # the connection layer does.
    kh.append("127.0.0.1", 2200, keys["ecdsa"])
    port, thread = _serve(keys["ecdsa2"])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        offered = transport.get_remote_server_key()
        with pytest.raises(ChangedHostKey) as info:
            verify_server_key(kh, "n", "127.0.0.1", 2200, offered, "accept-new")
        assert info.value.line == 2
    finally:
        transport.close()
        thread.join(15)
