"""A remote traceback names the user's files and shows their lines, and none of
clusterctl's own frames: for functions that travelled by value (a script and its helper
module), on local nodes and on bare SSH hosts that do not have the files. (This module
imports nothing of clusterctl at its top: a bare host imports it for its functions.)"""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import cloudpickle
import pytest

from helpers import script

HELPER = """
def scale(x):
    return 10 / x
"""

JOB = """
from tb_helper_mod import scale

def transform(x):
    y = x + 1
    return scale(x) + y
"""


@pytest.fixture
def by_value_script(tmp_path):
    """``transform`` from a script and a helper module in a fresh directory, both sent by
    value (as ``clusterctl pmap`` sends a script's), and the two files' paths."""
    (tmp_path / "tb_helper_mod.py").write_text(textwrap.dedent(HELPER))
    (tmp_path / "tb_job.py").write_text(textwrap.dedent(JOB))
    sys.path.insert(0, str(tmp_path))
    try:
        modules = []
        for name in ("tb_helper_mod", "tb_job"):
            spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            cloudpickle.register_pickle_by_value(module)
            modules.append(module)
        yield modules[1].transform, str(tmp_path / "tb_job.py"), str(tmp_path / "tb_helper_mod.py")
    finally:
        for name in ("tb_helper_mod", "tb_job"):
            module = sys.modules.pop(name, None)
            if module is not None:
                cloudpickle.unregister_pickle_by_value(module)
        sys.path.remove(str(tmp_path))


def test_a_remote_traceback_names_the_script_and_its_helper_with_their_lines(cluster, by_value_script):
    from clusterctl.api.pmap import ItemError

    transform, job, helper = by_value_script
    with pytest.raises(ItemError) as caught:
        list(cluster.pmap(transform, [1, 0, 2]))
    text = caught.value.remote_traceback
    assert f'File "{job}", line 6, in transform\n    return scale(x) + y' in text, text
    assert f'File "{helper}", line 3, in scale\n    return 10 / x' in text, text
    assert "<dynamic-code>" not in text and "clusterctl" not in text.replace(job, "").replace(helper, "")
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")


def test_a_name_that_is_not_a_function_is_one_line_with_no_frames_of_ours(cluster):
    from clusterctl import errors

    with pytest.raises(errors.RemoteError) as caught:
        cluster.rpc("n1", "math.pi")
    assert caught.value.remote_traceback == ""
    assert str(caught.value) == "n1: TypeError: math.pi is not callable (it is float)"


def raises_from_json(text):
    import json

    return json.loads(text)


@pytest.mark.local_only  # (the same code on any transport)
def test_frames_of_a_library_the_function_calls_stay(cluster):
    from clusterctl import errors

    with pytest.raises(errors.RemoteError) as caught:
        cluster.rpc("n1", raises_from_json, "{")
    text = caught.value.remote_traceback
    assert "in raises_from_json" in text and "json/decoder.py" in text, text
    assert "workers/worker.py" not in text and "cloudpickle" not in text, text


def test_the_command_line_shows_the_users_frames_only(local_hosts_env):
    env = local_hosts_env
    not_callable = env.cli("rpc", "n1", "math", "pi")
    assert not_callable.returncode != 0
    assert not_callable.stderr.strip() == "error: n1: TypeError: math.pi is not callable (it is float)"
    path = script(env, "def task(x):\n    return x +\n", "broken.py")
    broken = env.cli("pmap", path)
    assert broken.returncode != 0
    assert f'File "{path}", line 2' in broken.stderr and "SyntaxError: invalid syntax" in broken.stderr
    for ours in ("runpy", "clusterctl/cli", "load_script"):
        assert ours not in broken.stderr, broken.stderr
