"""Spawned processes' pure parts: restart types and intensity, addresses and names,
least-loaded placement, the notices a process receives, and the in-process API outside a
process."""

from __future__ import annotations

import pickle

import pytest

from clusterctl.actor import (
    Down, Exit, NotInProcess, ProcessError, ReceiveTimeout, call, receive, reply, self, send)
from clusterctl.api.actors import least_loaded
from clusterctl.api.actors.placement import load_score
from clusterctl.node import supervision
from clusterctl.node.addresses import address_problem, is_id, name_problem, node_of
from clusterctl.node.supervision import Restarts


# -- restart types and intensity ---------------------------------------------------------------

@pytest.mark.parametrize("kind, intensity, period", [
    ("permanent", 3, 5.0), ("transient", 0, 1), ("temporary", 10, 1e6)])
def test_good_restart_settings(kind, intensity, period):
    assert supervision.problem(kind, intensity, period) is None


@pytest.mark.parametrize("kind, intensity, period, words", [
    ("sometimes", 3, 5.0, "restart must be one of permanent, transient, temporary"),
    ("Permanent", 3, 5.0, "restart must be one of"),
    ("permanent", -1, 5.0, "intensity"),
    ("permanent", 2.0, 5.0, "intensity"),
    ("permanent", True, 5.0, "intensity"),
    ("permanent", 3, 0, "period"),
    ("permanent", 3, -1.0, "period"),
    ("permanent", 3, 2e6, "period"),
    ("permanent", 3, "5", "period"),
])
def test_bad_restart_settings_say_why(kind, intensity, period, words):
    assert words in supervision.problem(kind, intensity, period)


@pytest.mark.parametrize("kind, after_crash, after_normal_end", [
    ("permanent", True, True), ("transient", True, False), ("temporary", False, False)])
def test_which_ends_call_for_a_restart(kind, after_crash, after_normal_end):
    r = Restarts(kind)
    assert (r.wanted(abnormal=True), r.wanted(abnormal=False)) == (after_crash, after_normal_end)


def test_intensity_allows_so_many_restarts_within_the_period():
    r = Restarts("permanent", intensity=2, period=5)
    assert [r.allow(t) for t in (0.0, 1.0, 2.0, 4.9)] == [True, True, False, False]
    assert r.count == 2  # a refusal is not counted
    assert r.allow(5.5)  # the restart at 0.0 is older than the period by now
    assert not r.allow(5.6)
    assert r.allow(6.1)
    assert r.count == 4


def test_an_intensity_of_zero_allows_no_restart():
    assert not Restarts("permanent", intensity=0, period=5).allow(0.0)


def test_the_reason_of_giving_up_names_the_limit_and_the_last_exit():
    text = Restarts("transient", intensity=3, period=5).given_up("ValueError: boom")
    assert "restarted 3 times within 5 s (the limit)" in text
    assert text.endswith("ValueError: boom")
    assert Restarts("permanent", 4, 2).describe() == {"restart": "permanent", "intensity": 4, "period": 2.0}


# -- addresses and names ----------------------------------------------------------------------------

@pytest.mark.parametrize("to, node", [
    ("n2.17", "n2"), ("gpu.box.3", "gpu.box"), ("kvs", None), ("n2.", None), (".17", None),
    ("n2.x", None), ("17", None)])
def test_ids_and_their_node(to, node):
    assert node_of(to) == node
    assert is_id(to) == (node is not None)


@pytest.mark.parametrize("name", ["kvs", "_x", "a-b_c9", "K" * 128])
def test_good_names(name):
    assert name_problem(name) is None
    assert address_problem(name) is None


@pytest.mark.parametrize("name", ["", "1kvs", "-x", "a b", "a.b", "K" * 129, "é", None, 17, b"kvs"])
def test_bad_names_say_what_a_name_is(name):
    assert "a process name is a letter or _" in name_problem(name)


@pytest.mark.parametrize("to", ["", "a b", "n1.", "x" * 4097, "n1.2 ", None, 3, ["n1.2"]])
def test_bad_addresses(to):
    assert "send to a process id (like n2.17) or a registered name" in address_problem(to)


def test_an_id_is_an_address():
    assert address_problem("n2.17") is None
    assert address_problem("gpu.box.3") is None


# -- placement ----------------------------------------------------------------------------------

def test_the_least_loaded_node_by_processes_tasks_and_load():
    free = {"slots": 2, "cpus": 4, "load": [0.0], "processes": 0, "running": 0}
    assert least_loaded({"n1": dict(free, processes=3), "n2": free}) == "n2"
    assert least_loaded({"n1": dict(free, running=1), "n2": dict(free, processes=1)}) == "n1"  # a tie: first
    assert least_loaded({"n1": dict(free, load=[8.0]), "n2": dict(free, processes=1)}) == "n2"
    assert least_loaded({"n1": dict(free, slots=8, processes=3), "n2": dict(free, processes=1)}) == "n1"
    assert load_score({}) == 0.0


def test_no_node_to_place_on():
    with pytest.raises(ValueError):
        least_loaded({})


# -- notices and errors inside a process ------------------------------------------------------------

def test_down_and_exit_have_their_fields():
    down = Down("n1.1#2", "n1.3", "ValueError: boom", "Traceback ...")
    assert (down.ref, down.process, down.reason, down.traceback) == ("n1.1#2", "n1.3", "ValueError: boom", "Traceback ...")
    assert Down("r", "n1.3", "normal").traceback == ""
    ex = Exit("n1.3", "killed")
    assert (ex.process, ex.reason, ex.traceback) == ("n1.3", "killed", "")
    assert "n1.3" in repr(down) and "killed" in repr(ex)


@pytest.mark.parametrize("notice", [Down("n1.1#2", "n1.3", "normal", ""), Exit("n1.3", "killed", "")],
                         ids=["Down", "Exit"])
def test_a_notice_survives_pickling(notice):
    """A process may pass on the notices it gets (they are messages like any other):
    they unpickle as themselves (their __getnewargs__ gives the fields one by one)."""
    again = pickle.loads(pickle.dumps(notice))
    assert type(again) is type(notice) and tuple(again) == tuple(notice)


def test_the_in_process_api_outside_a_process_is_not_in_process():
    for op in (lambda: receive(timeout=0), lambda: send("n1.1", "hi"), lambda: call("n1.1", "hi"),
               lambda: reply(1), self):
        with pytest.raises(NotInProcess, match="only inside a spawned process"):
            op()
    assert issubclass(NotInProcess, ProcessError)
    assert issubclass(ReceiveTimeout, TimeoutError)


@pytest.mark.parametrize("strategy, ended, expected", [
    ("one_for_one", 1, [1]), ("one_for_all", 1, [0, 1, 2]), ("rest_for_one", 1, [1, 2]),
    ("rest_for_one", 0, [0, 1, 2]), ("rest_for_one", 2, [2])])
def test_a_group_restarts_which_children_its_strategy_says(strategy, ended, expected):
    from clusterctl.node.supervision import to_restart

    assert to_restart(strategy, 3, ended) == expected


def test_an_unknown_group_strategy_is_refused():
    from clusterctl.node.supervision import to_restart

    with pytest.raises(ValueError, match="strategy must be one of one_for_one"):
        to_restart("all_for_none", 3, 0)


# -- a new hub watching the nodes its killed predecessor watched ----------------------------------

def test_remembered_nodes_are_watched_again_together_per_settings():
    """Nodes watched with the same settings are watched again by one request, side by side
    (a few hundred, one by one over SSH, would take minutes); none is started."""
    from clusterctl.config.hosts import HostSpec
    from clusterctl.hub.known import rewatch_requests

    def remembered(name, ssh):
        spec = HostSpec(name=name, target="local", slots=1)
        return {"specs": [spec], "ssh": ssh, "start": False, "timeout": 5.0,
                "heartbeat": (1.0, 10.0), "limits": {}}

    plain, other = {"port": 22}, {"port": 2222}
    got = rewatch_requests({"n1": remembered("n1", plain), "n2": remembered("n2", plain),
                            "h1": remembered("h1", other), "n3": remembered("n3", dict(plain))})
    assert [[s.name for s in r["specs"]] for r in got] == [["n1", "n2", "n3"], ["h1"]]
    assert [r["ssh"] for r in got] == [plain, other]
    assert all(r["start"] is False and r["timeout"] == 5.0 for r in got)
    assert rewatch_requests({}) == []


# -- whereis: the holder's own word first ------------------------------------------------------------

def _asker(answers: dict, blocked=None):
    """``ask(node)`` from a table: an id, None, or an exception to raise; ``blocked`` nodes
    wait on their event (a node out of reach) before they answer."""
    from clusterctl import errors

    def ask(node):
        if blocked and node in blocked:
            blocked[node].wait(10)
        value = answers[node]
        if value is errors.NodeLost:
            raise errors.NodeLost(node, "out of reach")
        return value
    return ask


def test_whereis_takes_the_holders_own_word_at_once():
    import threading
    import time

    from clusterctl.api.actors.operations import holder_found

    gate = threading.Event()
    start = time.monotonic()
    try:
        found = holder_found(["n1", "n2", "n3"], _asker({"n1": None, "n2": "n2.4", "n3": None},
                                                        blocked={"n3": gate}))
    finally:
        gate.set()
    assert found == "n2.4" and time.monotonic() - start < 5


def test_whereis_does_not_believe_what_a_node_heard_when_the_holder_says_otherwise():
    """n1 heard (from the hub) that n2.1 holds the name; n2 has restarted it as n2.2 by now,
    or freed it: n2's own word counts."""
    from clusterctl.api.actors.operations import holder_found

    assert holder_found(["n1", "n2"], _asker({"n1": "n2.1", "n2": "n2.2"})) == "n2.2"
    assert holder_found(["n1", "n2"], _asker({"n1": "n2.1", "n2": None})) is None


def test_whereis_believes_what_a_node_heard_when_the_holder_cannot_say():
    from clusterctl import errors
    from clusterctl.api.actors.operations import holder_found

    assert holder_found(["n1", "n2"], _asker({"n1": "n2.1", "n2": errors.NodeLost})) == "n2.1"
    assert holder_found(["n1", "n2"], _asker({"n1": "x9.3", "n2": None})) == "x9.3"  # (not in this world)
    assert holder_found(["n1"], _asker({"n1": errors.NodeLost})) is None
    assert holder_found([], _asker({})) is None


def test_one_family_of_process_errors_and_one_down_for_a_program_and_a_process():
    """What process code raises (``clusterctl.actor``) is what a program catches
    (``clusterctl.errors``), and a program's monitor gives the processes' ``Down``."""
    from clusterctl import actor, errors
    from clusterctl.api.actors import Down as ProgramsDown

    for name in ("ProcessError", "NoProcess", "NameTaken", "MailboxFull", "CallFailed",
                 "ReceiveTimeout", "NotInProcess"):
        assert getattr(actor, name) is getattr(errors, name), name
        assert issubclass(getattr(errors, name), errors.ClusterError)
    assert ProgramsDown is actor.Down
    with pytest.raises(errors.NoProcess):
        raise actor.NoProcess("gone")


def test_one_table_of_error_kinds_names_what_a_program_raises():
    """The kind a node puts in a failed answer, the type name it shows, and the class a
    program raises, from one table."""
    from clusterctl.node.failures import KINDS, type_name
    from clusterctl.session.outcomes import remote_error

    for kind, cls in KINDS.items():
        raised = remote_error({"kind": kind, "message": "m", "node": "n1"})
        assert type(raised) is cls and type_name(kind) == cls.__name__, kind
    assert type_name("import") == "ImportError" and type_name("nonsense") == "ProcessError"


# -- ps's text: the processes' table, why some stay down, and the ones that ended ------------

PS_ROWS = [
    {"id": "n1.12", "name": "inventory-service-primary", "node": "n1",
     "function": "serve_inventory_requests", "state": "running", "uptime": 3725.0, "mailbox": 0,
     "restarts": 0, "memory": 17_301_504, "reason": None},
    {"id": "n2.40", "name": "database-gateway-replica", "node": "n2",
     "function": "refuse_connection_to_the_database", "state": "failed", "uptime": 0.0,
     "mailbox": 0, "restarts": 3, "memory": None,
     "reason": "restarted 3 times within 5 s (the limit): stays down; its last exit: "
               "ConnectionRefusedError: port 5432 is closed on db.internal.example.org"},
]


def ps_ended_rows() -> list[dict]:
    import time

    now = time.time()
    return [
        {"id": "n1.7", "name": None, "node": "n1", "function": "task", "state": "crashed",
         "ended": now - 12,
         "reason": "TypeError: task() missing 1 required positional argument: 'x'"},
        {"id": "n2.3", "name": "nightly-report", "node": "n2", "function": "quick",
         "state": "ended", "ended": now - 3, "reason": "normal"},
    ]


def ps_text(width: int, rows=PS_ROWS, ended=None) -> str:
    """``ps``'s text as a terminal of ``width`` columns shows it."""
    import io

    from rich.console import Console

    from clusterctl.render import actors as render

    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, soft_wrap=False)
    render.print_ps(console, rows, ps_ended_rows() if ended is None else ended)
    return out.getvalue()


REASONS = [PS_ROWS[1]["reason"], "TypeError: task() missing 1 required positional argument: 'x'",
           "normal"]


def test_ps_at_80_columns_drops_columns_before_it_cuts_a_name_and_wraps_between_words():
    text = ps_text(80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert lines[0].split()[:4] == ["id", "name", "function", "state"], text
    for row in PS_ROWS:
        line = next(line for line in lines if line.startswith(row["id"] + " "))  # (its row)
        assert line.split()[1:4] == [row["name"], row["function"], row["state"]], text
    joined = " ".join(text.split())
    for reason in REASONS:  # whole, wrapped between words at most
        assert reason in joined, text
    ids = ("n1.12", "n2.40", "n1.7", "n2.3")
    for line in lines[1:]:  # a wrapped line is indented under the line it goes on
        assert line.startswith((*ids, "    ")) or line in ("", "ended recently:"), text
    assert "…" not in text


def test_ps_at_200_columns_shows_every_column_and_each_reason_on_one_line():
    text = ps_text(200)
    lines = text.splitlines()
    assert lines[0].split() == ["id", "name", "node", "function", "state", "uptime", "mailbox",
                                "restarts", "memory"], text
    assert "n2.40 (database-gateway-replica): " + PS_ROWS[1]["reason"] in lines, text
    ended = lines[lines.index("ended recently:") + 1:]
    assert [line.split()[:3] for line in ended] == [["n1.7", "task", "crashed"],
                                                    ["n2.3", "(nightly-report)", "quick"]], text
    assert ended[0].endswith("ago: " + REASONS[1]) and ended[1].endswith("ago: normal"), text


def test_ps_says_when_nothing_runs_and_nothing_ended():
    assert ps_text(80, rows=[], ended=[]) == "no processes\n"
    assert ps_text(80, rows=[]).startswith("no processes running\n\nended recently:\n")
