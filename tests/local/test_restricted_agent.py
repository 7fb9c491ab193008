"""The restricted agent as sshd runs it (a forced command), fed what a controller, or
anyone holding the key, might send on its stdin: it answers one JSON line or refuses,
runs nothing it is sent, and never dies with a traceback. (Over a real sshd, with a
node behind it: tests/ssh/test_restricted.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

STUB_COMMAND = "python3 -S -c 'import sys;exec(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())))'"


@pytest.fixture
def place(tmp_path):
    """A policy file (``allow math.*``) and a private run directory: for running the restricted agent."""
    policy_dir = tmp_path / "etc"
    policy_dir.mkdir(mode=0o755)
    policy = policy_dir / "policy"
    policy.write_text("allow math.*\n")
    policy.chmod(0o644)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return policy, run


def agent(policy: Path, run: Path, stdin: bytes, command: str | None = STUB_COMMAND):
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    env["XDG_RUNTIME_DIR"] = str(run)
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run([sys.executable, "-m", "clusterctl.node.restricted", "--policy", str(policy)],
                          input=stdin, capture_output=True, timeout=30, env=env)


def request(params: dict, source: bytes = b"raise SystemExit('never run')") -> bytes:
    return b"%d\n" % len(source) + source + json.dumps(params).encode() + b"\n"


def answers(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_shell_or_a_command_is_refused_in_one_line(place):
    policy, run = place
    for command in (None, "id", "cat /etc/passwd"):
        done = agent(policy, run, b"", command)
        assert done.returncode == 1 and done.stdout == b""
        assert done.stderr.decode().count("\n") == 1
        assert "only reaches a restricted clusterctl node" in done.stderr.decode()


def test_the_boot_source_is_never_run_and_a_bad_name_is_refused(place, tmp_path):
    policy, run = place
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').close()".encode()
    done = agent(policy, run, request({"name": "../../x"}, source))
    assert answers(done.stdout) == [{"error": "bad node name '../../x': letters, digits, '_', '.', '-'"}]
    assert not marker.exists()


def test_a_bad_policy_is_answered_and_logged_naming_the_line(place):
    policy, run = place
    policy.write_text("allow math.*\nallow\n")
    done = agent(policy, run, request({"name": "r1", "agent_args": []}))
    [reply] = answers(done.stdout)
    assert f"policy {policy} line 2: 'allow' takes one value" in reply["error"]
    log = (run / "clusterctl" / "restricted" / "r1.log").read_text()
    assert "line 2" in log and "not starting" in log


def test_the_first_answer_says_restricted_and_takes_no_code(place):
    policy, run = place
    done = agent(policy, run, request({"name": "r1", "agent_args": ["--slots", "3"]})
                 + b"12\nzipfile-here")
    [first] = answers(done.stdout)
    assert first["restricted"] == 1 and first["need_code"] is False and first["version"]
    assert done.returncode == 0  # it declined the code and started nothing
    assert not (run / "clusterctl" / "restricted" / "r1.sock").exists()


@given(st.binary(max_size=300) | st.builds(
    lambda n, params: b"%d\n" % n + b"x" * max(n, 0) + params,
    st.integers(-5, 40), st.binary(max_size=200)))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_stdin_gets_an_answer_or_a_refusal_never_a_traceback(place, data):
    policy, run = place
    done = agent(policy, run, data)
    assert b"Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1)
    for reply in answers(done.stdout):
        assert "error" in reply or reply.get("restricted") == 1
