"""What the CLI shows, rendered into a string: tables, error text, JSON, colour."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from clusterctl import errors
from clusterctl.render import tables as render
from clusterctl.api.results import NodeInfo

INFOS = [
    NodeInfo("n1", "localhost", "pong", python="3.11.7", slots=2, load=(0.5, 0.25, 0.125),
             rtt=0.000123, pid=10, version="0.1.0"),
    NodeInfo("gpu7", "alice@[fe80::1]:2222", "pang", reason="SSH channel to gpu7 failed: timed out",
             error=errors.NodeUnreachable("gpu7", "SSH channel to gpu7 failed: timed out",
                                          summary="timed out")),
    NodeInfo("n3", "[bold]odd", "pong", python="3.11.7", slots=16, load=(2.0, 1.0, 0.0), rtt=0.0123),
]

WORLD = """\
node  host                  status           python  slots  load avg            rtt
n1    localhost             pong             3.11.7      2  0.50 0.25 0.12   123 µs
gpu7  alice@[fe80::1]:2222  pang: timed out  -           -  -                     -
n3    [bold]odd             pong             3.11.7     16  2.00 1.00 0.00  12.3 ms
"""

OUTCOMES = {
    "n1": [1, 2],
    "n2": errors.RemoteError("n2", "ZeroDivisionError", "division by zero", "Traceback ..."),
    "n3": "text with [red]markup[/red]",
    "n4": errors.NodeStartError("n4", "no Python at 'x'", hint="fix python= (hosts:4)"),
    "n5": {"k": None},
}

MULTICALL = """\
 node ┃ result
━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━
 n1   │ [1, 2]
 n2   │ error: ZeroDivisionError: division by zero
 n3   │ text with [red]markup[/red]
 n4   │ error: no Python at 'x' (fix python= (hosts:4))
 n5   │ {'k': None}
"""


def rendered(renderable, **options) -> str:
    console = Console(width=100, file=io.StringIO(), **options)
    console.print(renderable)
    return console.file.getvalue()


def lines(text: str) -> list[str]:
    """Rendered text without the padding rich leaves at the end of each line."""
    return [line.rstrip() for line in text.splitlines()]


def test_world_table():
    assert lines(rendered(render.world_table(INFOS))) == lines(WORLD)


def test_the_world_as_plain_lines_is_what_richs_table_shows():
    """A world that fits is written as aligned lines, without rich's Table (it measured
    100 rows for a third of a second): the same text, the same colours."""
    many = INFOS + [NodeInfo(f"h{i}", f"host-{i}.example", "pong", python="3.11.7", slots=i % 7 + 1,
                             load=(i / 7, 0.0, 1.5), rtt=i * 1e-4) for i in range(1, 101)]
    for infos in (INFOS, many):
        for full_load in (True, False):
            cells = render._world_cells(render.world_rows(infos), full_load=full_load)
            widths = [max(c.cell_len for c in column) for column in zip(*cells)]
            ours = render._aligned_lines(cells, widths)
            assert rendered(ours) == rendered(render._folding_table(cells))
            coloured = rendered(ours, force_terminal=True)  # (rich styles the padding too)
            assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == rendered(ours)
            assert "\x1b[32mpong\x1b[0m" in coloured and "\x1b[1mnode\x1b[0m" in coloured


def test_multicall_table():
    assert lines(rendered(render.multicall_table(OUTCOMES))) == lines(MULTICALL)


def test_down_table():
    text = rendered(render.down_table({"n1": "stopped", "n2": "not running",
                                       "n3": errors.NodeError("n3", "node process 5 did not exit")}))
    assert [line.split("│")[1].strip() for line in text.splitlines()[2:]] == [
        "stopped", "not running", "error: node process 5 did not exit"]


def test_colour_by_default_on_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    text = rendered(render.world_table(INFOS), force_terminal=True)
    assert "\x1b[32m" in text and "\x1b[31m" in text  # green pong, red pang


def test_no_color_is_honoured(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    for table in (render.world_table(INFOS), render.multicall_table(OUTCOMES)):
        text = rendered(table, force_terminal=True)
        assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", text)  # no foreground colour at all
        assert re.sub(r"\x1b\[[0-9;]*m", "", text).lstrip().startswith("node ")


def test_no_escape_codes_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert "\x1b" not in rendered(render.world_table(INFOS))


@pytest.mark.parametrize("seconds, text", [(None, "-"), (0.0000421, "42 µs"), (0.0042, "4.2 ms"),
                                           (3.14159, "3.14 s")])
def test_fmt_rtt(seconds, text):
    assert render.fmt_rtt(seconds) == text


@pytest.mark.parametrize("size, text", [(0, "0 B"), (812, "812 B"), (1024, "1.0 KB"),
                                        (3500, "3.4 KB"), (57_390_278, "54.7 MB"),
                                        (3 << 30, "3.0 GB")])
def test_fmt_size(size, text):
    assert render.fmt_size(size) == text


def test_error_text_of_a_remote_error_carries_the_remote_traceback():
    remote = "Traceback (most recent call last):\n  File \"x.py\"\nKeyError: 'k'"
    exc = errors.RemoteError("n2", "KeyError", "'k'", remote + "\n")
    assert render.error_text(exc) == "n2: KeyError: 'k'\nremote traceback (node n2):\n" + remote
    assert render.error_text(errors.UsageError("bad", hint="do this")) == "bad (do this)"


def test_short_error_drops_the_node_prefix():
    assert render.short_error(errors.NodeLost("n1", "gone", hint="retry")) == "gone (retry)"
    assert render.short_error(errors.ClusterError("plain")) == "plain"


def test_json_shapes():
    assert render.world_json(INFOS[:1]) == [{
        "node": "n1", "host": "localhost", "status": "pong", "reason": None, "summary": None, "python": "3.11.7",
        "slots": 2, "load": [0.5, 0.25, 0.125], "rtt": 0.000123, "pid": 10, "version": "0.1.0",
        "restricted": None}]
    assert render.outcome_json(OUTCOMES["n4"]) == {"ok": False, "error": {
        "type": "NodeStartError", "message": "n4: no Python at 'x'", "hint": "fix python= (hosts:4)",
        "node": "n4"}}
    assert json.loads(json.dumps(render.outcome_json({1: (2, {3}), "b": b"x"}))) == {
        "ok": True, "result": {"1": [2, [3]], "b": "eA=="}}  # bytes as base64
    json.loads(render.dump_json(render.outcome_json(OUTCOMES["n2"])))


@pytest.mark.parametrize("value", [
    0, -5, 2 ** 70, 1.5, float("nan"), 1j, True, None, b"\x00ab", [1, 2], (1,), (), {"k": [1, (2, 3)]},
    ["a" * 30, "b" * 30, "c" * 30], list(range(100)), {i: str(i) for i in range(40)}, [[]],
    {"nested": {"deeper": [1.0, None, b"x"]}}, {3, 1, 2}, frozenset({"a", 5}), frozenset(),
    [{"a", "b"}, {(1, 2), 3}], {1: frozenset({2})}])
def test_a_value_is_printed_as_rich_would_without_importing_it(value):
    """``rpc`` prints small plain values as their repr, without importing rich: the same
    text rich's pretty repr gives; others (long, or not plain) still go through rich."""
    from rich.pretty import pretty_repr

    assert render.value_text(value) == pretty_repr(value)


def test_value_text():
    assert render.value_text("plain") == "plain"
    assert render.value_text(1024.0) == "1024.0"
    assert render.value_text({"a": [1, 2]}) == "{'a': [1, 2]}"


# -- world at 80 columns: a line per node or cause, whole messages below -----------------------

def rendered_world(infos, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO())
    render.print_world(console, infos)
    return console.file.getvalue()


def changed_host_key(tmp_path) -> errors.ClusterError:
    """A real ChangedHostKey, from a known_hosts file deep enough that its path is long."""
    import paramiko
    from clusterctl.transport.hostkeys import KnownHosts

    old, new = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    folder = tmp_path / "a-home-directory-with-a-long-name" / "and" / ".ssh"
    folder.mkdir(parents=True)
    path = folder / "known_hosts"
    path.write_text(f"[127.0.0.1]:2222 {old.get_name()} {old.get_base64()}\n")
    with pytest.raises(errors.ClusterError) as info:
        KnownHosts([str(path)]).check("h2", "127.0.0.1", 2222, new)
    return info.value


def test_a_changed_host_key_is_one_line_and_its_fix_is_whole(tmp_path):
    error = changed_host_key(tmp_path)
    infos = [INFOS[0], NodeInfo("h2", "127.0.0.1:2222", "pang", reason=error.one_line(), error=error)]
    text = rendered_world(infos)
    assert "…" not in text
    table, details = text.split("\n\n", 1)
    assert [line.split()[:3] for line in lines(table)[1:]] == [
        ["n1", "localhost", "pong"], ["h2", "127.0.0.1:2222", "pang:"]]
    assert "pang: host key changed" in table and "CHANGED" not in table
    words = " ".join(details.split())
    assert words.startswith("h2: " + error.message)
    assert "fix: " + error.hint in words
    known_hosts = str(tmp_path / "a-home-directory-with-a-long-name" / "and" / ".ssh" / "known_hosts")
    assert len(known_hosts) > 80 and any(known_hosts in line for line in details.splitlines())


def test_identical_failures_are_one_line_naming_the_nodes_as_a_range():
    infos = [INFOS[0]] + [
        NodeInfo(f"h{i}", f"nohost-{i}.invalid", "pang", reason="...", error=errors.NodeUnreachable(
            f"h{i}", f"cannot resolve nohost-{i}.invalid: Name or service not known",
            hint=f"check the host name, or run: ssh -G nohost-{i}.invalid", summary="no such host"))
        for i in range(1, 101)]
    text = rendered_world(infos)
    assert "…" not in text
    assert lines(text) == [
        "node     host       status              python  slots  load avg           rtt",
        "n1       localhost  pong                3.11.7      2  0.50 0.25 0.12  123 µs",
        "h1-h100  100 hosts  pang: no such host  -           -  -                    -",
        "",
        "h1-h100 (100 nodes: no such host), e.g. h1: cannot resolve nohost-1.invalid:",
        "    Name or service not known",
        "  fix: check the host name, or run: ssh -G nohost-1.invalid",
    ]


def test_failures_alike_in_every_word_are_told_once_and_other_causes_apart():
    refused = [NodeInfo(n, "db", "pang", reason="...", error=errors.NodeStartError(
        n, "no Python at '/opt/py/bin/python3'", summary="no python")) for n in ("db1", "db2")]
    lost = NodeInfo("h7", "h7", "pang", reason="...", error=errors.NodeLost("h7", "no heartbeat"))
    assert lines(rendered_world([refused[0], lost, refused[1]])) == [
        "node     host  status           python  slots  load avg  rtt",
        "db1-db2  db    pang: no python  -           -  -           -",
        "h7       h7    pang: lost       -           -  -           -",
        "",
        "db1-db2 (2 nodes): no Python at '/opt/py/bin/python3'",
        "h7: no heartbeat",
    ]


def test_a_narrow_world_shows_the_one_minute_load():
    wide, narrow = rendered_world(INFOS, 120), rendered_world(INFOS, 70)
    assert "0.50 0.25 0.12" in wide and "load avg" in wide
    assert "load " in narrow and "0.50 " in narrow and "0.25" not in narrow
    assert all(len(line) <= 70 for line in lines(narrow))


def test_errors_carry_a_cause_in_a_few_words(tmp_path):
    import sys

    from clusterctl.version import require_same_python

    assert changed_host_key(tmp_path).summary == "host key changed"
    with pytest.raises(errors.HandshakeError) as info:
        require_same_python("n1", "3.9.18", where="the node", source="hosts:1")
    assert info.value.summary == "python 3.9, need %d.%d" % sys.version_info[:2]
    assert errors.NodeLost("n1", "gone").summary == "lost"
    assert NodeInfo("n1", "h", "pang", error=errors.CallTimeout("n1", "late")).summary == "timed out"
    assert INFOS[0].summary is None
