"""A restricted host's pure parts: plain data's JSON, the policy file, the gate, the
protocol range (the SSH behaviour is tests/ssh/test_restricted.py)."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterctl import errors
from clusterctl.node import plain, wire
from clusterctl.node.restricted import policy
from clusterctl.version import check_agent_protocol

# -- plain data ------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
plain_values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5) | st.lists(inner, max_size=5).map(tuple)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=5)
                   | st.dictionaries(st.integers() | st.text(max_size=3).map(lambda s: "$" + s), inner, max_size=3)),
    max_leaves=30)


@given(plain_values)
@settings(max_examples=300, deadline=None)
def test_plain_data_comes_back_as_it_went(value):
    assert plain.loads(plain.dumps(value)) == value


@pytest.mark.parametrize("value, form", [
    ((1, 2), {"$tuple": [1, 2]}),
    (b"\x00\xff", {"$bytes": "AP8="}),
    ({1: "a"}, {"$dict": [[1, "a"]]}),
    ({"$tuple": [1]}, {"$dict": [["$tuple", [1]]]}),  # never mistaken for a tuple
    ({"$x": 1, "y": 2}, {"$x": 1, "y": 2}),  # two keys: an ordinary object
])
def test_the_defined_forms(value, form):
    assert json.loads(plain.dumps(value)) == form
    assert plain.loads(plain.dumps(value)) == value


def test_nan_and_infinities_travel():
    back = plain.loads(plain.dumps([math.inf, -math.inf, math.nan]))
    assert back[:2] == [math.inf, -math.inf] and math.isnan(back[2])


@pytest.mark.parametrize("value, where", [
    ({1, 2}, "the value is a set"),
    ([1, {"k": object()}], "the value[1]['k'] is an object"),
    ({(1, 2): [1]}, None),  # a tuple key is fine: a $dict
    ("\ud800", "not text"),
])
def test_what_is_not_plain_data_is_named_with_where_it_is(value, where):
    if where is None:
        assert plain.loads(plain.dumps(value)) == value
        return
    with pytest.raises(plain.PlainDataError, match=where.replace("[", r"\[").replace("]", r"\]")):
        plain.dumps(value)


@pytest.mark.parametrize("data, why", [
    (b'{"$set": [1]}', "unknown form '\\$set'"),
    (b'{"$tuple": 1}', "bad \\$tuple form"),
    (b'{"$bytes": "not base64!"}', "bad \\$bytes form"),
    (b'{"$dict": [[[1], 2]]}', "cannot be a dict key"),
    (b'{"$dict": [1]}', "each entry must be a"),
    (b"\xff", "not plain data's JSON"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"[1,", "not plain data's JSON"),
])
def test_bytes_that_are_not_plain_data_are_an_error(data, why):
    with pytest.raises(plain.PlainDataError, match=why):
        plain.loads(data)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@settings(max_examples=500, deadline=None)
def test_fuzz_loads_raises_only_plain_data_errors(data):
    try:
        plain.loads(data)
    except plain.PlainDataError:
        pass


@given(st.recursive(st.none() | st.integers() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["$tuple", "$bytes", "$dict", "$", "a"]), inner, max_size=2),
                    max_leaves=12))
@settings(max_examples=500, deadline=None)
def test_fuzz_json_with_forms_raises_only_plain_data_errors(raw):
    try:
        plain.loads(json.dumps(raw).encode())
    except plain.PlainDataError:
        pass


# -- the policy file ---------------------------------------------------------------------

GOOD = """
# the lab's functions
allow mathlib.*
allow os.getloadavg     # one function
allow pkg.sub.fun
path /srv/lab/lib
slots 2
nice 10
memory 1G
"""


def test_a_policy_parses_into_rules_and_limits():
    p = policy.parse(GOOD, "/etc/p")
    assert p.allows == ("mathlib.*", "os.getloadavg", "pkg.sub.fun")
    assert p.paths == ("/srv/lab/lib",)
    assert (p.slots, p.nice, p.memory) == (2, 10, 1 << 30)


@pytest.mark.parametrize("mod, fun, allowed", [
    ("mathlib", "add", True),
    ("mathlib", "_hidden", False),  # a pattern matches public functions only
    ("mathlib.sub", "add", False),  # nor a submodule's
    ("os", "getloadavg", True),
    ("os", "system", False),
    ("pkg.sub", "fun", True),
    ("os.path", "join", False),
    ("mathlib", "add.__globals__", False),  # one function name, no attribute path
    ("", "add", False),
    (None, "add", False),
])
def test_allow_rules_match_exact_names_and_module_patterns(mod, fun, allowed):
    assert policy.parse(GOOD, "/etc/p").allowed(mod, fun) is allowed


def test_an_exact_rule_may_name_a_private_function():
    assert policy.parse("allow mathlib._setup\n", "p").allowed("mathlib", "_setup")


@pytest.mark.parametrize("text, message", [
    ("allow mathlib.*\nalow os.x\n", "policy /p line 2: unknown rule 'alow'"),
    ("allow mathlib\n", "line 1: 'allow' takes module.function"),
    ("allow *\n", "line 1: 'allow' takes module.function"),
    ("allow a.b c.d\n", "line 1: 'allow' takes one value"),
    ("slots 0\n", "line 1: 'slots' takes a number from 1"),
    ("slots 2\nslots 3\n", "line 2: 'slots' is given twice"),
    ("nice 20\n", "line 1: 'nice' takes a number from 0 to 19"),
    ("memory lots\n", "line 1: 'memory' takes a size"),
    ("memory 1K\n", "line 1: 'memory' must be at least"),
    ("path lib\n", "line 1: 'path' takes an absolute directory"),
])
def test_a_line_that_does_not_parse_is_named(text, message):
    with pytest.raises(policy.PolicyError, match=message.replace("*", r"\*")):
        policy.parse(text, "/p")


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_fuzz_any_text_parses_or_names_its_line(text):
    try:
        policy.parse(text, "/p")
    except policy.PolicyError as exc:
        assert str(exc).startswith("policy /p line ")


def test_a_policy_file_others_can_write_is_refused(tmp_path):
    path = tmp_path / "policy"
    path.write_text("allow a.b\n")
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    assert policy.load(str(path)).allows == ("a.b",)
    path.chmod(0o664)
    with pytest.raises(policy.PolicyError, match="writable by group or others .mode 664.: chmod go-w"):
        policy.load(str(path))
    path.chmod(0o644)
    tmp_path.chmod(0o777)
    with pytest.raises(policy.PolicyError, match="directory of the policy file .* is writable"):
        policy.load(str(path))
    tmp_path.chmod(0o755)
    with pytest.raises(policy.PolicyError, match="cannot read"):
        policy.load(str(tmp_path / "missing"))


def test_a_policy_file_of_another_user_is_refused(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to give the file away")
    path = tmp_path / "policy"
    path.write_text("allow a.b\n")
    tmp_path.chmod(0o755)
    os.chown(path, 12345, 12345)
    with pytest.raises(policy.PolicyError, match="belongs to uid 12345"):
        policy.load(str(path))


# -- the gate ----------------------------------------------------------------------------

@pytest.mark.parametrize("head, refused", [
    ({"op": "call", "id": 1, "mod": "mathlib", "fun": "add", "enc": "json"}, None),
    ({"op": "call", "id": 1, "mod": "os", "fun": "system", "enc": "json"}, "os.system is not allowed"),
    ({"op": "call", "id": 1, "mod": "mathlib", "fun": "add"}, "only as plain data"),
    ({"op": "call", "id": 1, "fk": "k", "enc": "json"}, "no pickled code"),
    ({"op": "call", "id": 1, "enc": "json"}, "not a module.function name"),
    ({"op": "defn", "key": "k"}, "no pickled code"),
    ({"op": "map", "id": 1, "mod": "mathlib", "fun": "add", "enc": "json"}, None),
    ({"op": "map", "id": 1, "fk": "k"}, "no pickled code"),
    ({"op": "ping", "id": 1}, None),
    ({"op": "stop"}, None),
    ({"op": "cancel", "id": 1}, None),
    ({"op": "spawn", "id": 1, "mod": "mathlib", "fun": "add"}, "does not take 'spawn' messages"),
])
def test_the_gate(head, refused):
    why = policy.parse(GOOD, "/etc/p").refuses(head)
    if refused is None:
        assert why is None
    else:
        assert refused in why and "\n" not in why


# -- versions ----------------------------------------------------------------------------

def test_an_agent_in_the_protocol_range_is_accepted():
    for proto in range(wire.OLDEST_PROTOCOL, wire.PROTOCOL_VERSION + 1):
        check_agent_protocol("r", {"proto": proto, "version": "0.1.0", "restricted": 1}, "lab")


@pytest.mark.parametrize("proto, who", [
    (wire.PROTOCOL_VERSION + 1, "upgrade clusterctl here"),
    (wire.OLDEST_PROTOCOL - 1, "ask the owner of lab to upgrade"),
])
def test_an_agent_out_of_the_range_is_refused_naming_both_versions(proto, who):
    with pytest.raises(errors.HandshakeError) as info:
        check_agent_protocol("r", {"proto": proto, "version": "9.9", "restricted": 1}, "lab")
    text = f"{info.value} ({info.value.hint})"
    assert f"clusterctl 9.9 (protocol {proto})" in text and "speaks protocols" in text
    assert who in text


def test_a_node_refuses_a_controller_of_another_protocol_naming_both():
    message = wire.protocol_mismatch(wire.PROTOCOL_VERSION + 1, "0.1.0")
    assert "protocols %d to %d" % (wire.OLDEST_PROTOCOL, wire.PROTOCOL_VERSION) in message
    assert "clusterctl 0.1.0" in message and "ask the host's owner" in message
    assert "upgrade clusterctl on the controller" in wire.protocol_mismatch(0, "0.1.0")


# -- what a pattern matches: functions defined in its module ------------------------------

def test_a_pattern_matches_only_functions_defined_in_its_module():
    """``allow os.*`` must not reach what os imported (``os.system`` is posix's): the
    function found is checked, not only its name. An exact rule names one function,
    wherever it was defined."""
    p = policy.parse("allow os.*\nallow shutil.copy\n", "/etc/p")
    assert p.admits("os", "makedirs", os.makedirs)  # defined in os
    assert not p.admits("os", "system", os.system)  # posix.system, imported into os
    assert not p.admits("os", "getpid", os.getpid)
    assert "posix.system" in p.refusal_of("os", "system", os.system)
    assert "/etc/p" in p.refusal_of("os", "system", os.system)
    assert "\n" not in p.refusal_of("os", "system", os.system)
    exact = policy.parse("allow os.getpid\n", "/etc/p")
    assert exact.admits("os", "getpid", os.getpid)  # an exact rule keeps matching its name
    assert not exact.admits("os", "getppid", os.getppid)


# -- the owner's bounds on the node itself ------------------------------------------------

def test_slots_payload_and_queue_have_bounds_by_default():
    p = policy.parse("allow a.b\n", "/etc/p")
    assert p.max_slots() == (os.cpu_count() or 1)  # never what a controller asks for
    assert p.max_payload() == policy.DEFAULT_PAYLOAD == 16 << 20
    assert p.max_queued() == policy.DEFAULT_QUEUE == 64 << 20
    given = policy.parse("slots 300\npayload 1M\nqueue 256M\n", "/etc/p")
    assert (given.max_slots(), given.max_payload(), given.max_queued()) == (300, 1 << 20, 256 << 20)


@pytest.mark.parametrize("text, message", [
    ("payload lots\n", "line 1: 'payload' takes a size"),
    ("payload 2G\n", "line 1: 'payload' must be at most 1G"),
    ("payload 10\n", "line 1: 'payload' must be at least 1K"),
    ("queue 1\n", "line 1: 'queue' must be at least 1K"),
    ("queue 1M\nqueue 2M\n", "line 2: 'queue' is given twice"),
])
def test_a_bad_size_rule_is_named(text, message):
    with pytest.raises(policy.PolicyError, match=message):
        policy.parse(text, "/p")


def test_refusals_over_the_limits_name_the_rule_and_the_file():
    default = policy.parse("allow a.b\n", "/etc/p")
    why = default.over_payload(17 << 20)
    assert "'payload'" in why and "/etc/p" in why and "16M" in why and "\n" not in why
    why = policy.parse("queue 2M\n", "/etc/p").over_queue(2 << 20, 1 << 20)
    assert "'queue 2M'" in why and "/etc/p" in why and "\n" not in why


# -- the owner's import path ------------------------------------------------------------------

def _policy_with_path(tmp_path, lib):
    tmp_path.chmod(0o755)
    path = tmp_path / "policy"
    path.write_text(f"allow a.b\n# the lab\npath {lib}\n")
    path.chmod(0o644)
    return path


def test_a_path_directory_others_can_write_is_refused_naming_file_line_and_directory(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o755)
    path = _policy_with_path(tmp_path, lib)
    assert policy.load(str(path)).paths == (str(lib),)
    lib.chmod(0o777)
    with pytest.raises(policy.PolicyError) as info:
        policy.load(str(path))
    message = str(info.value)
    assert message.startswith(f"policy {path} line 3: ")
    assert f"{lib} is writable by group or others (mode 777)" in message and "chmod go-w" in message
    lib.chmod(0o775)
    with pytest.raises(policy.PolicyError, match="mode 775"):
        policy.load(str(path))


def test_a_path_directory_under_a_parent_others_can_write_is_refused(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    lib = parent / "lib"
    lib.mkdir(mode=0o755)
    parent.chmod(0o777)  # another user could put a directory of their own in its place
    path = _policy_with_path(tmp_path, lib)
    with pytest.raises(policy.PolicyError, match=f"line 3: .*{parent} is writable by group or others"):
        policy.load(str(path))
    parent.chmod(0o1777)  # sticky, as /tmp: nobody else may rename or remove what is ours
    assert policy.load(str(path)).paths == (str(lib),)


def test_a_missing_path_directory_is_refused(tmp_path):
    path = _policy_with_path(tmp_path, tmp_path / "nowhere")
    with pytest.raises(policy.PolicyError, match=f"line 3: cannot use the directory {tmp_path / 'nowhere'}"):
        policy.load(str(path))


def test_a_path_directory_of_another_user_is_refused(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to give the directory away")
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o755)
    os.chown(lib, 12345, 12345)
    path = _policy_with_path(tmp_path, lib)
    with pytest.raises(policy.PolicyError, match=f"line 3: .*{lib} belongs to uid 12345"):
        policy.load(str(path))
