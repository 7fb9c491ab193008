"""The bytecode that travels with a shipped package (api/env/bytecode.py): a fresh cache
file of this Python goes as a checked hash-based one that another copy of the source,
written later, imports without compiling; a stale one stays home; a module this process
did not import sends none; the node installs it beside the source, outside the id."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
import time
from importlib.util import cache_from_source

from clusterctl.api.env.bytecode import bytecode_of, travelling
from clusterctl.node import boot

SOURCE = "VALUE = 42\n\ndef twice(x):\n    return 2 * x\n"


def compiled_module(tmp_path, name="shipme"):
    source = tmp_path / "home" / f"{name}.py"
    source.parent.mkdir(exist_ok=True)
    source.write_text(SOURCE)
    py_compile.compile(str(source), doraise=True)  # (timestamp-based, as Python writes them)
    return source


def imports_from_bytecode(directory, name) -> tuple[bool, str]:
    """Whether a new Python imports ``name`` from ``directory`` using its cache file."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-v", "-c", f"import sys; sys.path.insert(0, {str(directory)!r}); "
                           f"import {name}; assert {name}.twice({name}.VALUE) == 84"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    return f"code object from '{directory}/__pycache__/{name}." in done.stderr, done.stderr


def test_a_fresh_cache_file_travels_and_a_later_copy_of_the_source_uses_it(tmp_path):
    source = compiled_module(tmp_path)
    data = travelling(str(source), cache_from_source(str(source)))
    assert data is not None and data[4:8] == (0b11).to_bytes(4, "little")  # checked hash-based
    copy = tmp_path / "host"
    (copy / "__pycache__").mkdir(parents=True)
    (copy / "shipme.py").write_text(SOURCE)  # written later: its time is not the original's
    os.utime(copy / "shipme.py", (time.time() + 100, time.time() + 100))
    (copy / "__pycache__" / os.path.basename(cache_from_source(str(source)))).write_bytes(data)
    used, log = imports_from_bytecode(copy, "shipme")
    assert used, log[-2000:]


def test_a_cache_file_is_not_used_for_a_source_that_differs(tmp_path):
    source = compiled_module(tmp_path)
    data = travelling(str(source), cache_from_source(str(source)))
    copy = tmp_path / "host"
    (copy / "__pycache__").mkdir(parents=True)
    (copy / "shipme.py").write_text(SOURCE.replace("42", "21"))  # (same size: only the hash tells)
    (copy / "__pycache__" / os.path.basename(cache_from_source(str(source)))).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(copy)!r}); "
                           "import shipme; print(shipme.VALUE)"], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.stdout.strip() == "21", done.stderr


def test_a_stale_or_foreign_cache_file_stays_home(tmp_path):
    source = compiled_module(tmp_path)
    cached = cache_from_source(str(source))
    source.write_text(SOURCE + "# edited\n")  # (the cache file is now older than its source)
    assert travelling(str(source), cached) is None
    py_compile.compile(str(source), doraise=True)
    with open(cached, "r+b") as fh:  # another Python's magic number
        fh.write(b"\x00\x00\r\n")
    assert travelling(str(source), cached) is None
    assert travelling(str(source), str(tmp_path / "missing.pyc")) is None


def test_a_source_changed_within_the_same_second_to_the_same_size_keeps_its_bytecode_home(tmp_path):
    source = compiled_module(tmp_path)
    cached = cache_from_source(str(source))
    second = int(time.time()) - 10
    os.utime(source, ns=(second * 10**9, second * 10**9))
    py_compile.compile(str(source), doraise=True)
    os.utime(cached, ns=(second * 10**9 + 300_000_000,) * 2)
    assert travelling(str(source), cached) is not None
    source.write_text(SOURCE.replace("42", "21"))  # (Python would take the cache file for it)
    os.utime(source, ns=(second * 10**9 + 500_000_000,) * 2)
    assert travelling(str(source), cached) is None


def test_only_the_modules_this_process_imported_send_bytecode(tmp_path):
    source = compiled_module(tmp_path, "imported_here")
    other = compiled_module(tmp_path, "never_imported")
    sys.path.insert(0, str(source.parent))
    try:
        import imported_here  # noqa: F401
        found = dict(bytecode_of([("pkg/imported_here.py", str(source)),
                                  ("pkg/never_imported.py", str(other)), ("pkg/data.txt", str(other))]))
    finally:
        sys.path.remove(str(source.parent))
        sys.modules.pop("imported_here", None)
    name = "pkg/__pycache__/" + os.path.basename(cache_from_source(str(source)))
    assert list(found) == [name]


def test_the_node_installs_bytecode_beside_the_source_outside_the_id(tmp_path):
    files = [("pkg/__init__.py", b""), ("pkg/mod.py", SOURCE.encode()), ("top.py", b"X = 1\n")]
    code_id = boot.code_digest(files)
    sent = files + [("pkg/__pycache__/mod.cpython-311.pyc", b"bytecode"),
                    ("__pycache__/top.cpython-311.pyc", b"bytecode")]
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    target = cache / "env" / code_id
    boot.install_code(str(target), code_id, sent)
    assert (target / "pkg" / "__pycache__" / "mod.cpython-311.pyc").read_bytes() == b"bytecode"
    assert (target / "__pycache__" / "top.cpython-311.pyc").read_bytes() == b"bytecode"
    assert not (target / "__pycache__" / "__pycache__").exists()
    assert (target / boot.MANIFEST).read_text().split() == [rel for rel, _ in files]
    assert boot.code_ok(str(target), code_id)
