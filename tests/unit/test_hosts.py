"""Unit tests for the hosts file: syntax, ranges, names, errors, and where it is found.

Pure parsing, no processes: the hosts file is checked up front so that a typo is one
error naming file and line, and these tests pin that down.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clusterctl.errors import ClusterError, HostsFileError
from clusterctl.config.hosts import (
    DEFAULT_PYTHON,
    HostSpec,
    default_world,
    expand_ranges,
    find_hosts_file,
    load_hosts,
    parse_hosts,
    resolve_world,
)

EXAMPLE = Path(__file__).parents[2] / "hosts.example"


def names(text: str) -> list[str]:
    return [spec.name for spec in parse_hosts(text, "hosts")]


def parse_one(text: str) -> HostSpec:
    specs = parse_hosts(text, "hosts")
    assert len(specs) == 1
    return specs[0]


def error_of(text: str, filename: str = "myhosts") -> HostsFileError:
    with pytest.raises(HostsFileError) as info:
        parse_hosts(text, filename)
    return info.value


# ------------------------------------------------------------------------- ranges


def test_range_keeps_zero_padding_of_start_bound():
    assert expand_ranges("node[01-03]") == ["node01", "node02", "node03"]
    assert expand_ranges("n[08-11]") == ["n08", "n09", "n10", "n11"]
    assert expand_ranges("n[8-11]") == ["n8", "n9", "n10", "n11"]
    assert expand_ranges("n[001-002]x") == ["n001x", "n002x"]


def test_range_lists_and_single_numbers_as_written():
    assert expand_ranges("node[1,3,5-7]") == ["node1", "node3", "node5", "node6", "node7"]
    assert expand_ranges("n[07,1]") == ["n07", "n1"]


def test_several_brackets_form_product_in_order():
    assert expand_ranges("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert expand_ranges("[1-2]-[5]") == ["1-5", "2-5"]


def test_no_brackets_expands_to_itself():
    assert expand_ranges("myalias") == ["myalias"]
    assert expand_ranges("alice@node1:22") == ["alice@node1:22"]


def test_ipv6_bracket_is_not_a_range():
    assert expand_ranges("[fe80::1]") == ["[fe80::1]"]
    assert expand_ranges("bob@[::1]:[2201-2202]") == ["bob@[::1]:2201", "bob@[::1]:2202"]


def test_expansion_limit():
    assert len(expand_ranges("n[1-10000]")) == 10_000
    assert len(expand_ranges("r[1-100]n[1-100]")) == 10_000
    with pytest.raises(ValueError, match="10,001 hosts"):
        expand_ranges("n[0-10000]")
    with pytest.raises(ValueError, match="more than the limit"):
        expand_ranges("r[1-101]n[1-100]")
    with pytest.raises(ValueError, match="more than the limit"):
        expand_ranges("n[1-999999999999]")  # refused before anything is built


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("n[5-1]", "reversed range '5-1'"),
        ("n[]", "empty range"),
        ("n[1,,2]", "empty item"),
        ("n[a-c]", "'a-c' is not a number"),
        ("n[1-]", "'1-' is not a number"),
        ("n[-1-3]", "not a number"),
        ("n[1-3", "unclosed '['"),
        ("n1-3]", "unmatched ']'"),
        ("n[[1-2]]", "nested '['"),
        ("www[01:50]", "Ansible range"),
    ],
)
def test_bad_ranges_raise_readable_value_error(pattern, fragment):
    with pytest.raises(ValueError) as info:
        expand_ranges(pattern)
    assert fragment in str(info.value)


def test_ansible_range_error_suggests_dash_form():
    with pytest.raises(ValueError, match=r"\[01-50\]"):
        expand_ranges("www[01:50]")


# ------------------------------------------------------------------------ targets


def test_local():
    spec = parse_one("local")
    assert spec == HostSpec(name="local", target="local", source="hosts:1")
    assert spec.is_local
    assert (spec.user, spec.host, spec.port, spec.slots, spec.python, spec.idle) == (
        None, None, None, None, None, None)


def test_alias():
    spec = parse_one("myalias")
    assert (spec.name, spec.target, spec.user, spec.host, spec.port) == (
        "myalias", "myalias", None, "myalias", None)
    assert not spec.is_local


def test_user_host_port():
    spec = parse_one("alice@node03:2222")
    assert (spec.name, spec.target, spec.user, spec.host, spec.port) == (
        "node03", "alice@node03:2222", "alice", "node03", 2222)


def test_user_with_at_sign_splits_at_last_at_like_ssh():
    spec = parse_one("alice@corp.example@gw.example")
    assert (spec.user, spec.host) == ("alice@corp.example", "gw.example")


def test_host_with_port_only():
    spec = parse_one("192.0.2.7:2200")
    assert (spec.user, spec.host, spec.port, spec.name) == (None, "192.0.2.7", 2200, "192.0.2.7")


def test_ipv6_without_port():
    spec = parse_one("[fe80::1]")
    assert (spec.target, spec.host, spec.port, spec.user) == ("[fe80::1]", "fe80::1", None, None)
    assert spec.name == "fe80--1"


def test_ipv6_with_user_and_port():
    spec = parse_one("user@[::1]:2222")
    assert (spec.target, spec.user, spec.host, spec.port) == ("user@[::1]:2222", "user", "::1", 2222)
    assert spec.name == "0--1"  # '::1' is '0::1': the name keeps a leading digit


def test_ipv6_with_zone():
    spec = parse_one("[fe80::1%eth0]:22")
    assert (spec.host, spec.port, spec.name) == ("fe80::1%eth0", 22, "fe80--1-eth0")


def test_range_in_target_expands_to_several_specs():
    specs = parse_hosts("alice@node[01-03]:2222 slots=4", "hosts")
    assert [s.target for s in specs] == ["alice@node01:2222", "alice@node02:2222",
                                         "alice@node03:2222"]
    assert [s.name for s in specs] == ["node01", "node02", "node03"]
    assert {(s.user, s.port, s.slots, s.source) for s in specs} == {("alice", 2222, 4, "hosts:1")}


def test_range_over_ports_numbers_shared_host_names():
    specs = parse_hosts("localhost:[2201-2203]", "hosts")
    assert [(s.name, s.port) for s in specs] == [
        ("localhost-1", 2201), ("localhost-2", 2202), ("localhost-3", 2203)]


def test_range_with_name_range():
    specs = parse_hosts("node[1-4] name=w[1-4]", "hosts")
    assert [(s.name, s.host) for s in specs] == [
        ("w1", "node1"), ("w2", "node2"), ("w3", "node3"), ("w4", "node4")]


# ------------------------------------------------------------------------ options


def test_all_options():
    spec = parse_one("gpu1 name=g slots=8 python=/opt/venv/bin/python idle=600")
    assert (spec.name, spec.slots, spec.python, spec.idle) == ("g", 8, "/opt/venv/bin/python", 600.0)
    assert isinstance(spec.idle, float)


@pytest.mark.parametrize("python", ["/opt/venv/bin/python", "python3.11", "~/venv/bin/python3",
                                    "/opt/py-3.11_x86+64/bin/python@1"])
def test_plain_python_paths_are_accepted(python):
    assert parse_one(f"node1 python={python}").python == python


def test_python_command_is_one_quoted_word_for_the_remote_shell():
    from clusterctl.transport.ssh import shell_word

    assert shell_word("python3") == "python3"
    assert shell_word("python3;touch${IFS}/tmp/x") == "'python3;touch${IFS}/tmp/x'"
    assert shell_word("~/venv/bin/python") == '"$HOME"/venv/bin/python'
    assert shell_word("~/a b;c") == "\"$HOME\"/'a b;c'"


def test_fractional_idle_and_command_python():
    spec = parse_one("local idle=0.5 python=python3.11")
    assert (spec.idle, spec.python) == (0.5, "python3.11")


def test_restricted_says_the_host_is_lent_under_a_policy():
    assert parse_one("lab restricted=yes").restricted is True
    assert parse_one("lab restricted=NO").restricted is False
    assert parse_one("lab").restricted is False
    with pytest.raises(HostsFileError, match="bad restricted=maybe"):
        parse_one("lab restricted=maybe")
    with pytest.raises(HostsFileError, match="restricted=yes on a local node"):
        parse_one("local restricted=yes")


def test_mpi_hostfile_style():
    specs = parse_hosts("node1 slots=8\nnode2 slots=4\n", "mpi")
    assert [(s.name, s.host, s.slots) for s in specs] == [("node1", "node1", 8), ("node2", "node2", 4)]


def test_tabs_separate_options():
    assert parse_one("node1\tslots=3\t\tname=x").slots == 3


def test_default_python_constant():
    assert DEFAULT_PYTHON == "python3"


def test_hostspec_is_frozen():
    spec = parse_one("local")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("local\nnode1 cores=4\n", 2, "unknown option 'cores'"),
        ("node1 slots\n", 1, "expected key=value"),
        ("node1 node2\n", 1, "expected key=value after the host, got 'node2'"),
        ("node1 slots=2 slots=3\n", 1, "option slots= given twice"),
        ("node1 slots=0\n", 1, "bad slots=0"),
        ("node1 slots=-1\n", 1, "bad slots=-1"),
        ("node1 slots=two\n", 1, "bad slots=two"),
        ("node1 slots=1.5\n", 1, "bad slots=1.5"),
        ("node1 slots=\n", 1, "bad slots="),
        ("node1 python=\n", 1, "empty python="),
        ("node1 python=python3;touch${IFS}/tmp/x\n", 1,
         "python=python3;touch${IFS}/tmp/x is not a plain interpreter path or command"),
        ("local\nnode1 python=$(id)\n", 2, "python=$(id) is not a plain"),
        ("node1 python=py`id`\n", 1, "python=py`id` is not a plain"),
        ("node1 python=/x/../a|b\n", 1, "python=/x/../a|b is not a plain"),
        ("node1 name=\n", 1, "empty name="),
        ("node1 name=-x\n", 1, "bad node name '-x'"),
        ("node1 name=a/b\n", 1, "bad node name 'a/b'"),
        ("node1 idle=0\n", 1, "bad idle=0"),
        ("node1 idle=-5\n", 1, "bad idle=-5"),
        ("node1 idle=inf\n", 1, "bad idle=inf"),
        ("node1 idle=nan\n", 1, "bad idle=nan"),
        ("node1 idle=10m\n", 1, "bad idle=10m"),
        ("node1 idle=" + "9" * 400 + "\n", 1, "bad idle=999"),  # overflows to inf
        ("\n\nnode1:0\n", 3, "bad port '0'"),
        ("node1:65536\n", 1, "bad port '65536'"),
        ("node1:ssh\n", 1, "bad port 'ssh'"),
        ("node1:\n", 1, "empty port"),
        ("[::1]:99999\n", 1, "bad port '99999'"),
        ("alice@\n", 1, "no host"),
        (":22\n", 1, "no host"),
        ("@node1\n", 1, "empty user"),
        ("-oProxyCommand=x\n", 1, "not a host"),
        ("-badhost\n", 1, "'-badhost' is not a host name"),
        ("a:b@node1\n", 1, "bad user 'a:b'"),
        ("fe80::1\n", 1, "IPv6 address without brackets"),
        ("[fe80::zz]\n", 1, "not an IPv6 address"),
        ("[::1]x\n", 1, "unexpected 'x' after ']'"),
        ("slots=4\n", 1, "starts with 'slots=4', not a host"),
        ("node[5-1]\n", 1, "reversed range"),
        ("node[1-20000]\n", 1, "more than the limit"),
        ("node[01:16]\n", 1, "Ansible range"),
        ("node[1-3] name=w\n", 1, "gives 1 name(s) for 3 host(s)"),
        ("node[1-3] name=w[1-2]\n", 1, "gives 2 name(s) for 3 host(s)"),
        ("node1 name=w[1-2]\n", 1, "gives 2 name(s) for 1 host(s)"),
        ("'node1'.\n", 1, "Erlang"),
        ("local:22\n", 1, "'local' means this machine without SSH"),
        ("alice@local\n", 1, "'local' means this machine without SSH"),
        ("ssh://alice@node1\n", 1, "is a URL"),
        ("node1 =3\n", 1, "'=3' has no option name"),
        ("[all:vars]\n", 1, "INI section header"),
        ("[1.2.3.4]\n", 1, "'1.2.3.4' is not a number"),
        ("[webservers]\nnode1\n", 1, "INI section header"),
    ],
)
def test_errors_name_file_and_line(text, line, fragment):
    err = error_of(text)
    assert str(err).startswith(f"myhosts:{line}: ")
    assert fragment in str(err)
    assert (err.path, err.line) == ("myhosts", line)
    assert err.hint  # every line error says what is allowed
    assert isinstance(err, ClusterError) and err.exit_code == 1


def test_unknown_key_hints_allowed_options_and_close_match():
    err = error_of("node1 slot=4")
    assert err.hint is not None
    assert "did you mean slots=?" in err.hint
    assert "name=, slots=, python=, idle=" in err.hint
    assert err.one_line().startswith("myhosts:1: unknown option 'slot' (did you mean slots=?")


def test_unknown_key_hint_for_scoop_workers():
    err = error_of("node1 workers=4")
    assert err.hint is not None and "slots=" in err.hint and "SCOOP" in err.hint


def test_erlang_hint_shows_bare_host():
    err = error_of("\n'node1.example.org'.")
    assert err.line == 2
    assert err.hint == "write the bare host: node1.example.org"


def test_empty_file_defines_no_hosts():
    for text in ["", "\n\n", "# only a comment\n   # another\n"]:
        err = error_of(text)
        assert str(err) == "myhosts: defines no hosts"
        assert err.line is None


def test_line_numbers_count_comments_and_blank_lines():
    err = error_of("# header\n\nlocal\n  # indented comment\nnode1 bogus=1\n")
    assert str(err).startswith("myhosts:5: unknown option 'bogus'")


# -------------------------------------------------------------------------- names


def test_derived_names_are_numbered_in_file_order():
    assert names("local\nlocal\n") == ["local-1", "local-2"]
    assert names("node1\nnode2\nnode1\nlocal\n") == ["node1-1", "node2", "node1-2", "local"]


def test_single_derived_name_is_not_numbered():
    assert names("local\nnode1\n") == ["local", "node1"]


def test_explicit_names_do_not_count_towards_numbering():
    assert names("local name=a\nlocal\n") == ["a", "local"]
    assert names("local name=a\nlocal\nlocal\n") == ["a", "local-1", "local-2"]


def test_range_duplicates_are_numbered():
    assert names("node[1,1]") == ["node1-1", "node1-2"]


def test_duplicate_explicit_names_name_both_lines():
    err = error_of("local name=n1\nnode2\nnode3 name=n1\n")
    assert str(err).startswith("myhosts:3: node name 'n1' is already used at myhosts:1")
    assert err.line == 3


def test_explicit_name_repeating_derived_name_is_an_error():
    err = error_of("node2\nnode3 name=node2\n")
    assert str(err).startswith("myhosts:2: node name 'node2' is already used at myhosts:1")


def test_derived_name_repeating_earlier_explicit_name_is_an_error():
    err = error_of("node3 name=node2\nnode2\n")
    assert str(err).startswith(
        "myhosts:2: node name 'node2' (named after its host) is already used at myhosts:1")


def test_explicit_name_clashing_with_numbered_name_is_an_error():
    err = error_of("local\nlocal\nnode9 name=local-2\n")
    assert str(err).startswith("myhosts:3: node name 'local-2' is already used at myhosts:2")


def test_duplicate_names_within_one_line():
    err = error_of("node[1-2] name=w[1,1]\n")
    assert str(err).startswith("myhosts:1: node name 'w1' is already used on this line")


# ---------------------------------------------------------- line endings, comments


def test_crlf_bom_and_comments():
    text = "\ufeff# cluster\r\nlocal name=a slots=2  # two workers\r\n\r\n  node1\t# trailing\r\n"
    specs = parse_hosts(text, "hosts")
    assert [(s.name, s.slots, s.source) for s in specs] == [("a", 2, "hosts:2"), ("node1", None, "hosts:4")]


def test_bare_cr_line_endings():
    assert names("local name=a\rlocal name=b\r") == ["a", "b"]


def test_bom_before_host():
    assert names("\ufefflocal") == ["local"]


def test_hash_inside_a_word_is_not_a_comment():
    spec = parse_one("local python=/opt/py#3/bin/python")
    assert spec.python == "/opt/py#3/bin/python"


def test_sources_are_file_and_line():
    specs = parse_hosts("# c\nlocal name=a\n\nlocal name=b\n", "/etc/x/hosts")
    assert [s.source for s in specs] == ["/etc/x/hosts:2", "/etc/x/hosts:4"]


# ------------------------------------------------------------------- load_hosts


def test_load_hosts_reads_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_bytes(b"\xef\xbb\xbflocal name=a\r\nnode1 slots=2\r\n")
    specs = load_hosts(path)
    assert [(s.name, s.source) for s in specs] == [("a", f"{path}:1"), ("node1", f"{path}:2")]


def test_load_hosts_missing_file(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(HostsFileError) as info:
        load_hosts(path)
    assert str(info.value) == f"{path}: no such file"


def test_load_hosts_directory(tmp_path):
    with pytest.raises(HostsFileError) as info:
        load_hosts(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a hosts file"


def test_load_hosts_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "hosts"
    path.write_bytes(b"local\nn\xe9ud1\n")
    with pytest.raises(HostsFileError) as info:
        load_hosts(path)
    assert str(info.value) == f"{path}:2: not UTF-8 text (byte 0xe9)"
    assert info.value.hint == "save it as UTF-8"


def test_load_hosts_utf16_gets_a_hint(tmp_path):
    path = tmp_path / "hosts"
    path.write_bytes("local\n".encode("utf-16"))
    with pytest.raises(HostsFileError) as info:
        load_hosts(path)
    assert info.value.hint == "it looks like UTF-16: save it as UTF-8"


def _load_hosts_error_as(uid: int | None, path: Path) -> str:
    """str() of the HostsFileError load_hosts(path) raises, read as ``uid`` (None: as
    we are). Root reads any file whatever its mode bits, so as root the read happens in
    a forked child that has dropped to ``uid`` first."""
    if uid is None:
        with pytest.raises(HostsFileError) as info:
            load_hosts(path)
        return str(info.value)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                load_hosts(path)
                text = "no error"
            except HostsFileError as exc:
                text = str(exc)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                text = f"{type(exc).__name__}: {exc}"
            os.write(wfd, text.encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        text = fh.read().decode()
    os.waitpid(pid, 0)
    return text


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
def test_load_hosts_permission_denied():
    # A directory anyone may enter, holding a file nobody may read; as root the read is
    # made by a child running as nobody (uid 65534), since root bypasses the mode bits.
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="cch", dir="/tmp"))
    try:
        root.chmod(0o711)
        path = root / "hosts"
        path.write_text("local\n")
        path.chmod(0)
        text = _load_hosts_error_as(65534 if os.geteuid() == 0 else None, path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert text == f"{path}: permission denied"


# ------------------------------------------------------------- find_hosts_file


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    """An empty XDG config home, so the config directory resolves under tmp_path."""
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv("CLUSTERCTL_HOSTS", raising=False)
    return xdg / "clusterctl"


@pytest.fixture
def workdir(tmp_path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_find_nothing_returns_none(config_dir, workdir):
    assert find_hosts_file(env={}, cwd=workdir) is None


def test_find_lookup_order(config_dir, workdir, tmp_path):
    config_dir.mkdir()
    (config_dir / "hosts").write_text("local name=cfg\n")
    assert find_hosts_file(env={}, cwd=workdir) == config_dir / "hosts"

    (workdir / "hosts").write_text("local name=here\n")
    assert find_hosts_file(env={}, cwd=workdir) == workdir / "hosts"

    from_env = tmp_path / "env-hosts"
    from_env.write_text("local name=env\n")
    env = {"CLUSTERCTL_HOSTS": str(from_env)}
    assert find_hosts_file(env=env, cwd=workdir) == from_env

    flag = tmp_path / "flag-hosts"
    flag.write_text("local name=flag\n")
    assert find_hosts_file(str(flag), env=env, cwd=workdir) == flag


def test_find_relative_paths_resolve_against_cwd(config_dir, workdir):
    (workdir / "mine").write_text("local\n")
    assert find_hosts_file("mine", env={}, cwd=workdir) == workdir / "mine"
    assert find_hosts_file(env={"CLUSTERCTL_HOSTS": "mine"}, cwd=workdir) == workdir / "mine"


def test_find_uses_os_environ_by_default(config_dir, workdir, monkeypatch, tmp_path):
    target = tmp_path / "via-environ"
    target.write_text("local\n")
    monkeypatch.setenv("CLUSTERCTL_HOSTS", str(target))
    assert find_hosts_file(cwd=workdir) == target


def test_find_explicit_missing_is_an_error(config_dir, workdir):
    (workdir / "hosts").write_text("local\n")  # not used as a fallback
    with pytest.raises(HostsFileError) as info:
        find_hosts_file("missing", env={}, cwd=workdir)
    assert str(info.value) == "missing: no such file (given by --hosts)"


def test_find_explicit_directory_is_an_error(config_dir, workdir):
    with pytest.raises(HostsFileError, match="is a directory"):
        find_hosts_file(str(workdir), env={}, cwd=workdir)


def test_find_env_pointing_nowhere_is_an_error(config_dir, workdir):
    (workdir / "hosts").write_text("local\n")  # not used as a fallback
    with pytest.raises(HostsFileError) as info:
        find_hosts_file(env={"CLUSTERCTL_HOSTS": "/no/such/hosts"}, cwd=workdir)
    assert str(info.value) == "/no/such/hosts: $CLUSTERCTL_HOSTS points nowhere: no such file"
    assert info.value.hint == "fix or unset CLUSTERCTL_HOSTS"


def test_find_empty_env_counts_as_unset(config_dir, workdir):
    (workdir / "hosts").write_text("local\n")
    assert find_hosts_file(env={"CLUSTERCTL_HOSTS": ""}, cwd=workdir) == workdir / "hosts"


def test_find_skips_a_hosts_directory(config_dir, workdir):
    (workdir / "hosts").mkdir()
    assert find_hosts_file(env={}, cwd=workdir) is None


# ----------------------------------------------------- default and resolved world


def test_default_world():
    assert default_world() == [
        HostSpec(name="local", target="local", slots=os.cpu_count(), source="<default>")]
    assert default_world()[0].is_local


def test_resolve_world_default(config_dir, workdir):
    specs, where = resolve_world(env={}, cwd=workdir)
    assert (specs, where) == (default_world(), "default: one local node")


def test_resolve_world_from_dot_hosts(config_dir, workdir):
    (workdir / "hosts").write_text("local name=a\nlocal name=b\n")
    specs, where = resolve_world(env={}, cwd=workdir)
    assert where == "hosts file ./hosts"
    assert [(s.name, s.source) for s in specs] == [("a", "./hosts:1"), ("b", "./hosts:2")]


def test_resolve_world_from_env_says_so(config_dir, workdir, tmp_path):
    path = tmp_path / "h"
    path.write_text("local\n")
    specs, where = resolve_world(env={"CLUSTERCTL_HOSTS": str(path)}, cwd=workdir)
    assert where == f"hosts file {path} (from $CLUSTERCTL_HOSTS)"
    assert [s.name for s in specs] == ["local"]


def test_resolve_world_explicit_errors_name_the_path_as_given(config_dir, workdir):
    (workdir / "bad").write_text("local\nlocal oops\n")
    with pytest.raises(HostsFileError) as info:
        resolve_world("bad", env={}, cwd=workdir)
    assert str(info.value).startswith("bad:2: expected key=value")


def test_resolve_world_with_real_cwd(config_dir, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("CLUSTERCTL_HOSTS", raising=False)
    (workdir / "hosts").write_text("node[1-2]\n")
    specs, where = resolve_world()
    assert where == "hosts file ./hosts"
    assert [s.name for s in specs] == ["node1", "node2"]


# ------------------------------------------------------------------ hosts.example


def test_hosts_example_parses_to_n1_and_n2():
    specs = load_hosts(EXAMPLE)
    assert [(s.name, s.target, s.slots) for s in specs] == [("n1", "local", 2), ("n2", "local", 2)]


def test_hosts_example_commented_lines_parse_when_uncommented():
    """The commented example host lines are real syntax, not prose that merely looks right."""
    lines = EXAMPLE.read_text().splitlines()
    examples = [line[2:] for line in lines
                if line.startswith("# ") and not line.startswith("#  ")
                and line[2:3].strip() and _looks_like_host_line(line[2:])]
    assert len(examples) >= 15
    for line in examples:
        specs = parse_hosts(line, "example")
        assert specs, line


def _looks_like_host_line(text: str) -> bool:
    first = text.split()[0]
    return first == "local" or (
        first[0].isalnum() or first[0] == "[") and (
        len(text.split()) == 1 or all("=" in word for word in text.split()[1:]))


def test_hosts_example_fully_uncommented_is_one_valid_file():
    """All examples together still form a valid world, and the comments tell the truth."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("# ") and line[2:3].strip() and _looks_like_host_line(line[2:]):
            line = line[2:]
        lines.append(line)
    specs = parse_hosts("\n".join(lines), "example")
    got = [s.name for s in specs]
    assert len(got) == 49 == len(set(got))
    assert got[:3] == ["n1", "n2", "local"]
    assert {"node04-1", "node04-2", "gpubox", "gpu", "v6b", "w4", "2001-db8--10", "lab"} <= set(got)
    assert [s.port for s in specs if s.host == "localhost"] == [2201, 2202, 2203, 2204]


def test_hosts_module_imports_neither_paramiko_nor_rich():
    """hosts.py is read by every command: it must not pull in SSH, rendering or click."""
    import ast

    import clusterctl.config.hosts

    tree = ast.parse(Path(clusterctl.config.hosts.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert "clusterctl" in imported and "os" in imported  # the walk sees its imports
    assert not imported & {"paramiko", "rich", "cloudpickle", "click"}
