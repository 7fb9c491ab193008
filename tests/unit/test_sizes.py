"""Small pieces stay small: no class in the package over about 300 lines, no function
over 60 (docstrings included). A piece that grows past them is split, or named here with
the reason it is kept whole."""

from __future__ import annotations

import ast
from pathlib import Path

import clusterctl

PACKAGE = Path(clusterctl.__file__).resolve().parent
MAX_CLASS_LINES = 310  # "about 300": a class a few lines over is not worth cutting
MAX_FUNCTION_LINES = 60
# "path:Name" (the path under src/clusterctl) -> why it is longer than its limit: a
# sentence. An entry must name a class or function that is over its limit (a stale one fails).
KEPT_WHOLE: dict[str, str] = {
    "api/cluster.py:Cluster": (
        "Cluster is the public API in one class: its spawned-process methods are delegations "
        "to its Processes part (api/actors), each with the signature and docstring help() "
        "shows, and cutting it further only to fit would scatter that API."),
}


def sizes(source: str, where: str) -> list[tuple[str, int, int]]:
    """``(where:name, lines, limit)`` for each class and function in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            limit = MAX_FUNCTION_LINES
        else:
            continue
        found.append((f"{where}:{node.name}", node.end_lineno - node.lineno + 1, limit))
    return found


def oversized(source: str, where: str, kept: dict[str, str] = KEPT_WHOLE) -> list[str]:
    """``where:name (N lines)`` for each class or function in ``source`` over the limits
    and not ``kept``."""
    return [f"{key} ({lines} lines)" for key, lines, limit in sizes(source, where)
            if lines > limit and key not in kept]


def package_sizes() -> list[tuple[str, int, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += sizes(path.read_text(), str(path.relative_to(PACKAGE)))
    return found


def kept_whole_problems(kept: dict[str, str], found: list[tuple[str, int, int]]) -> list[str]:
    """What is wrong with the ``kept`` entries, given the ``found`` sizes: an entry that
    names nothing, one that fits its limit by now (stale), a reason that is no sentence."""
    problems = []
    for key, reason in kept.items():
        over = [lines - limit for name, lines, limit in found if name == key]
        if not over:
            problems.append(f"{key}: no such class or function")
        elif max(over) <= 0:
            problems.append(f"{key}: within its limit now; take it out of KEPT_WHOLE")
        if not is_sentence(reason):
            problems.append(f"{key}: the reason is no sentence: {reason!r}")
    return problems


def is_sentence(text: object) -> bool:
    """A reason worth the name: a capital first, a full stop last, a few words between."""
    return (isinstance(text, str) and text == text.strip() and text[:1].isupper()
            and text.endswith(".") and len(text.split()) >= 4)


def test_no_class_or_function_is_over_its_size():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += oversized(path.read_text(), str(path.relative_to(PACKAGE)))
    assert found == []


def test_what_is_kept_whole_is_there_over_its_limit_and_says_why():
    assert kept_whole_problems(KEPT_WHOLE, package_sizes()) == []


def test_the_kept_whole_check_finds_stale_and_unexplained_entries():
    found = [("m.py:Big", MAX_CLASS_LINES + 5, MAX_CLASS_LINES),
             ("m.py:Small", MAX_CLASS_LINES, MAX_CLASS_LINES),
             ("m.py:one", MAX_FUNCTION_LINES + 1, MAX_FUNCTION_LINES),
             ("m.py:one", 3, MAX_FUNCTION_LINES)]  # (two functions of one name: one is over)
    reason = "It is one piece for a reason given here."
    assert kept_whole_problems({"m.py:Big": reason, "m.py:one": reason}, found) == []
    assert kept_whole_problems({"m.py:Small": reason, "m.py:Gone": reason}, found) == [
        "m.py:Small: within its limit now; take it out of KEPT_WHOLE",
        "m.py:Gone: no such class or function"]
    for bad in ("", " ", "big", "it is long for now.", "It is long for now", " It is long."):
        assert kept_whole_problems({"m.py:Big": bad}, found) == [
            f"m.py:Big: the reason is no sentence: {bad!r}"], bad


def test_the_size_check_finds_a_long_function_and_a_long_class():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    source = f"def long():\n{body}\n\ndef short():\n    return 1\n"
    assert oversized(source, "m.py") == [f"m.py:long ({MAX_FUNCTION_LINES + 1} lines)"]
    methods = "".join(f"    def m{i}(self):\n        return {i}\n\n" for i in range(MAX_CLASS_LINES // 3 + 1))
    found = oversized(f"class Big:\n{methods}", "m.py")
    assert len(found) == 1 and found[0].startswith("m.py:Big (")
    assert oversized(f"class Big:\n{methods}", "m.py", {"m.py:Big": "Kept whole for a reason."}) == []
