"""The environment that travels, its pure parts: which modules a call needs, what
package holds them and its id, and a worker's path (api/env, node/workers/envs.py)."""

from __future__ import annotations

import io
import sys
import threading
import zipfile
from pathlib import Path

import cloudpickle
import pytest

from clusterctl.api.env import needs, packages
from clusterctl.node import boot
from clusterctl.node.workers import envs


def test_a_pickle_names_the_modules_of_its_globals_and_of_what_a_function_uses():
    import fractions

    data = cloudpickle.dumps((None, (fractions.Fraction(1, 3),), {}))
    assert "fractions" in needs.modules_in_pickle(data)
    assert "fractions" in needs.names_in(data)
    fn = lambda: fractions.Fraction(1)  # noqa: E731 - a module a by-value function uses
    assert "fractions" in needs.modules_in_pickle(cloudpickle.dumps(fn))


def test_the_quick_scan_keeps_only_names_of_modules_this_process_has():
    data = cloudpickle.dumps({"fractions": 1, "no_such_module_here": 2})
    found = needs.names_in(data)
    assert "no_such_module_here" not in found


def test_an_import_inside_a_function_body_is_found_without_running_it():
    def body():
        import no_such_module_at_all  # noqa: F401 - never run

        return 1

    assert "no_such_module_at_all" in needs.modules_imported(body)


def test_what_a_closure_and_a_default_hold_is_found():
    import decimal
    import fractions

    third = fractions.Fraction(1, 3)

    def uses(x=decimal.Decimal(1)):
        return third + x

    found = needs.modules_imported(uses)
    assert {"fractions", "decimal"} <= found


def test_the_standard_library_and_what_every_node_has_never_travel():
    assert needs.top_levels({"os.path", "json", "clusterctl.actor", "cloudpickle", "__main__",
                             "numpy.linalg", "mylib.sub"}) == {"numpy", "mylib"}


def write_tree(root, text: str) -> None:
    (root / "mypkg").mkdir(exist_ok=True)
    (root / "mypkg" / "__init__.py").write_text(text)
    for skipped in (".git", "__pycache__", ".venv"):
        (root / "mypkg" / skipped).mkdir(exist_ok=True)
        (root / "mypkg" / skipped / "junk.py").write_text("x = 1\n")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    write_tree(tmp_path, "import fractions\nimport no_such_dependency\nVALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("mypkg", None)


def test_a_users_package_travels_without_version_control_caches_or_virtualenvs(tree):
    package = packages.tree_package("mypkg")
    assert [rel for rel, _ in package.files] == ["mypkg/__init__.py"]
    assert package.version == "" and not package.compiled
    assert "no_such_dependency" in package.requires and "fractions" in package.requires


def test_an_edit_gives_a_package_a_new_id(tree):
    before = packages.tree_package("mypkg").code_id
    assert packages.tree_package("mypkg").code_id == before
    write_tree(tree, "VALUE = 2\n")
    assert packages.tree_package("mypkg").code_id != before


def test_a_distribution_travels_whole_with_its_record_and_what_it_requires():
    found = {p.name.lower(): p for p in packages.packages_for({"rich"})}
    assert "rich" in found and "pygments" in found  # (rich requires pygments)
    rich = found["rich"]
    rels = [rel for rel, _ in rich.files]
    assert any(rel.endswith(".dist-info/METADATA") for rel in rels)
    assert not any(rel.startswith("../") or rel.endswith(".pyc") for rel in rels)
    assert rich.code_id == boot.code_digest((rel, Path(path).read_bytes()) for rel, path in rich.files)


def test_the_agents_own_distributions_never_travel():
    assert packages.packages_for({"cloudpickle", "clusterctl"}) == []


def install(package_files: dict, code_id: str, root) -> str:
    target = str(root / "env" / code_id)
    boot.install_code(target, code_id, sorted(package_files.items()))
    return target


def test_a_package_is_installed_only_if_it_matches_its_id(tmp_path):
    files = {"mypkg/__init__.py": b"VALUE = 1\n"}
    good = boot.code_digest(sorted(files.items()))
    with pytest.raises(ValueError, match="does not match"):
        install(files, "0" * 16, tmp_path)
    assert boot.code_ok(install(files, good, tmp_path), good)
    assert [p.name for p in (tmp_path / "env").iterdir()] == [good]  # no staging left


def test_two_installs_of_one_package_at_once_leave_one_good_copy(tmp_path):
    files = {f"mypkg/m{i}.py": b"x = %d\n" % i for i in range(200)}
    code_id = boot.code_digest(sorted(files.items()))
    threads = [threading.Thread(target=install, args=(files, code_id, tmp_path)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert boot.code_ok(str(tmp_path / "env" / code_id), code_id)
    assert [p.name for p in (tmp_path / "env").iterdir() if not p.name.startswith(".")] == [code_id]


def test_a_package_with_dotfiles_installs_and_one_escaping_its_directory_does_not(tmp_path):
    files = {"mypkg/__init__.py": b"", "mypkg/data/.hidden": b"data"}
    code_id = boot.code_digest(sorted(files.items()))
    assert boot.code_ok(install(files, code_id, tmp_path), code_id)
    bad = {"../escape.py": b""}
    with pytest.raises(ValueError, match="bad file name"):
        install(bad, boot.code_digest(sorted(bad.items())), tmp_path)


def test_a_zip_compressed_side_by_side_unzips_as_any_zip_in_its_order(tmp_path, monkeypatch):
    from clusterctl.api.env import zipping

    contents = {"a/big.bin": bytes(range(256)) * 5000, "a/empty.py": b"", "é/ü.py": b"x = 1\n",
                "z.txt": b"last"}
    files = []
    for name, data in contents.items():
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(data)
        files.append((name, str(path)))
    files.append(("a/__pycache__/m.pyc", b"given as bytes"))  # (bytecode comes as contents)
    contents["a/__pycache__/m.pyc"] = b"given as bytes"
    made = zipping.zip_files(files)
    with zipfile.ZipFile(io.BytesIO(made)) as archive:
        assert archive.testzip() is None  # (every CRC checks)
        assert archive.namelist() == list(contents)
    assert list(boot.unzip(made)) == list(contents.items())
    monkeypatch.setattr(zipping, "MAX_FILES", 2)  # (too many files for this writer: zipfile's)
    assert list(boot.unzip(zipping.zip_files(files))) == list(contents.items())


def test_a_damaged_zip_is_refused():
    with pytest.raises(ValueError, match="damaged"):
        list(boot.unzip(b"PK\x03\x04 not a zip"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.py", "x = 1\n")
    assert list(boot.unzip(out.getvalue())) == [("a.py", b"x = 1\n")]


def test_a_worker_takes_the_newer_package_of_a_name_and_forgets_the_older(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(envs, "_in_use", {})
    ids = []
    for version in (1, 2):
        files = {"envprobe/__init__.py": b"VERSION = %d\n" % version}
        code_id = boot.code_digest(sorted(files.items()))
        boot.install_code(envs.env_dir(code_id), code_id, sorted(files.items()))
        ids.append(code_id)
    try:
        assert envs.use([ids[0]]) is True
        import envprobe

        assert envprobe.VERSION == 1
        assert envs.use([ids[0]]) is False  # (already first on the path)
        assert envs.use([ids[1]]) is True
        import envprobe as again

        assert again.VERSION == 2
        assert envs.env_dir(ids[0]) not in sys.path and sys.path[0] == envs.env_dir(ids[1])
    finally:
        sys.modules.pop("envprobe", None)


# -- compiled packages only where they can load -------------------------------------------

HELLO = {"machine": "x86_64", "python": "3.11.7", "libc": "glibc 2.17"}


def compiled(tags: tuple[str, ...]) -> packages.Package:
    return packages.Package("numpy", "2.4.6", (("numpy/_core.so", "/dev/null"),), "0" * 16, 1,
                            compiled=True, tags=tags)


def test_a_wheel_for_a_newer_glibc_is_refused_in_one_line_naming_the_package_and_the_host():
    from clusterctl.api.env.platforms import cannot_load

    reason = cannot_load(compiled(("cp311-cp311-manylinux_2_27_x86_64",
                                   "cp311-cp311-manylinux_2_28_x86_64")), "h3", HELLO)
    assert reason == ("numpy 2.4.6 is built for manylinux_2_28_x86_64; h3 has glibc 2.17: "
                      "install numpy on h3, or leave h3 out with --nodes")


@pytest.mark.parametrize("tag, hello, fits", [
    ("cp311-cp311-manylinux_2_17_x86_64", HELLO, True),
    ("cp311-cp311-manylinux2014_x86_64", HELLO, True),
    ("cp311-cp311-manylinux_2_17_aarch64", HELLO, False),
    ("cp312-cp312-manylinux_2_17_x86_64", HELLO, False),
    ("cp38-abi3-manylinux_2_17_x86_64", HELLO, True),
    ("py3-none-any", HELLO, True),
    ("cp311-cp311-manylinux_2_17_x86_64", dict(HELLO, libc=""), False),
    ("cp311-cp311-linux_x86_64", HELLO, False),
])
def test_which_wheels_load_where(tag, hello, fits):
    from clusterctl.api.env.platforms import cannot_load

    assert (cannot_load(compiled((tag,)), "h1", hello) is None) is fits


def test_a_pure_package_goes_anywhere():
    from clusterctl.api.env.platforms import cannot_load

    pure = packages.Package("rich", "15", (("rich/__init__.py", "/dev/null"),), "0" * 16, 1)
    assert cannot_load(pure, "h1", {"machine": "riscv64", "python": "3.11.1", "libc": ""}) is None


def test_a_by_value_functions_own_module_is_not_needed_but_what_it_uses_is():
    import fractions

    fn = lambda: fractions.Fraction(1)  # noqa: E731 - a lambda of this test module
    found = needs.modules_imported(fn)
    assert __name__ not in found and "fractions" in found


def test_a_function_pickled_by_reference_needs_its_module():
    from fractions import Fraction

    assert needs.by_reference(Fraction) and not needs.by_reference(lambda: 1)
    assert needs.modules_imported(needs.top_levels) == {"clusterctl.api.env.needs"}
