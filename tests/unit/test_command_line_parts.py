"""The command line as people type it, in parts: durations, global options after the
command, and a function named in one dotted word or two (the commands themselves run in
tests/local/test_command_line.py)."""

from __future__ import annotations

import io

import click
import pytest

from clusterctl.cli.arguments import Seconds, function_named, globals_first
from clusterctl.cli.inputs import json_lines, text_lines
from clusterctl.cli.main import cli
from clusterctl.errors import UsageError


@pytest.mark.parametrize("text, seconds", [("30", 30.0), ("2.5", 2.5), (".5", 0.5), ("500ms", 0.5),
                                           ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0),
                                           (" 3 s ", 3.0), (7, 7.0)])
def test_a_duration_is_seconds_or_a_number_with_a_unit(text, seconds):
    assert Seconds().convert(text, None, None) == seconds


@pytest.mark.parametrize("text, words", [("abc", "not a number of seconds: 'abc'"),
                                         ("5x", "not a number of seconds"),
                                         ("-1", "not a number of seconds"),
                                         ("0", "is no time"), ("0s", "is no time"),
                                         ("1e3", "not a number of seconds")])
def test_what_is_not_a_duration_says_so_in_words(text, words):
    with pytest.raises(click.BadParameter, match=words):
        Seconds().convert(text, None, None)
    assert Seconds(zero=True).convert("0", None, None) == 0.0


@pytest.mark.parametrize("typed, parsed", [
    (["ps", "--json"], ["--json", "ps"]),
    (["world", "--hosts", "h.txt", "--json"], ["--hosts", "h.txt", "--json", "world"]),
    (["world", "--hosts=h.txt"], ["--hosts=h.txt", "world"]),
    (["--debug", "ps", "--json", "-n", "n1"], ["--debug", "--json", "ps", "-n", "n1"]),
    # rpc has a --timeout of its own: it stays rpc's; --json is the world's
    (["rpc", "n1", "time.sleep", "1", "--timeout", "5", "--json"],
     ["--json", "rpc", "n1", "time.sleep", "1", "--timeout", "5"]),
    # after --, the function's arguments
    (["rpc", "n1", "builtins.repr", "--", "--json"], ["rpc", "n1", "builtins.repr", "--", "--json"]),
    (["pmap", "job.py", "--timeout", "1"], ["--timeout", "1", "pmap", "job.py"]),
    (["--hosts", "h", "down"], ["--hosts", "h", "down"]),
    (["nosuchcommand", "--json"], ["nosuchcommand", "--json"]),
])
def test_global_options_after_the_command_go_before_it(typed, parsed):
    with click.Context(cli) as ctx:
        assert globals_first(cli, ctx, typed) == parsed


@pytest.mark.parametrize("words, target, rest", [
    (("math.pow", ("2", "10")), "math:pow", ("2", "10")),
    (("math", ("pow", "2", "10")), "math:pow", ("2", "10")),
    (("os.getloadavg", ()), "os:getloadavg", ()),
    (("os.path", ("join", "/tmp", "x")), "os.path:join", ("/tmp", "x")),  # (a module here)
    (("os.path.join", ("/tmp", "x")), "os.path:join", ("/tmp", "x")),
    (("onlyonhosts.tools.run", ("a",)), "onlyonhosts.tools:run", ("a",)),
])
def test_a_function_is_named_in_one_dotted_word_or_two(words, target, rest):
    assert function_named(*words) == (target, rest)


def test_a_module_alone_asks_which_function():
    with pytest.raises(UsageError, match="math names a module: which of its functions"):
        function_named("math", ())


def test_every_command_summary_is_a_whole_sentence_and_exit_code_3_names_pmap():
    from click.testing import CliRunner

    shown = CliRunner().invoke(cli, ["--help"], terminal_width=80).output
    listing = shown.split("Commands:")[1].split("Exit codes:")[0]
    summaries = [line.strip() for line in listing.splitlines() if line.strip()]
    assert len(summaries) >= 15
    for line in summaries:
        assert not line.endswith("..."), line
    assert "pmap and pipeline" in shown.split("Exit codes:")[1]


def test_text_that_looks_like_a_literal_and_is_none_is_said(capsys):
    from clusterctl.cli.main import parse_arg

    assert parse_arg("('store', 'a', 1") == "('store', 'a', 1"
    assert "note: ('store', 'a', 1 is not a Python literal" in capsys.readouterr().err
    assert parse_arg("('store', 'a', 1)") == ("store", "a", 1)
    assert parse_arg("plain words") == "plain words"
    assert capsys.readouterr().err == ""


def test_text_lines_are_items_without_line_endings_and_bytes_not_utf8_are_said():
    text = io.TextIOWrapper(io.BytesIO("a b\r\n\n  \nété\nlast".encode()), encoding="utf-8")
    assert list(text_lines(text, "f")) == ["a b", "  ", "été", "last"]
    for read in (text_lines, json_lines):
        bad = io.TextIOWrapper(io.BytesIO(b'"ok"\n\xff\n'), encoding="utf-8")
        with pytest.raises(UsageError, match=r"f: not UTF-8 text \(invalid start byte: byte b'\\xff'\)"):
            list(read(bad, "f"))


def test_the_readme_names_every_command_and_every_long_option_the_help_shows():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    ctx = click.Context(cli)
    missing = [o for p in cli.params for o in p.opts + p.secondary_opts
               if o.startswith("--") and o != "--help" and o not in readme]
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if f"clusterctl {name}" not in readme:
            missing.append(name)
        missing += [f"{name} {o}" for p in command.params for o in p.opts + p.secondary_opts
                    if o.startswith("--") and o != "--help" and o not in readme]
    assert missing == []
