"""What tasks print, in parts: a worker's batching, bounds and cut lines, and the
controller's prefixes, escapes and counts (the whole path runs in
tests/local/test_task_output.py)."""

from __future__ import annotations

import json
import os

from clusterctl.api.task_output import TaskOutput as Shown
from clusterctl.node import wire
from clusterctl.node.workers import output


def frames_of(sent: list[bytes]) -> list[tuple[dict, list]]:
    """What a worker sent: each ``taskout``'s head and lines."""
    return [(wire.frame_head(f), json.loads(f[wire.HEADER_SIZE + wire.check_header(f, 1 << 40)[0]:]))
            for f in sent]


def worker_output(sent: list[bytes], fallen: list | None = None) -> output.TaskOutput:
    """A worker's output whose frames land in ``sent`` (a forked child's text in ``fallen``)."""
    fallen = [] if fallen is None else fallen
    return output.TaskOutput(sent.append, lambda stream, text: fallen.append((stream, text)))


def test_lines_wait_for_the_task_end_and_go_in_one_frame_with_their_item_and_stream():
    sent: list[bytes] = []
    printed = worker_output(sent)
    printed.place = (7, [])  # (a map whose first item is 7, none of its items done yet)
    printed.write("out", "a\nb")
    printed.write("err", "oops\n")
    printed.write("out", "c\n")
    assert sent == []  # (not yet: batched)
    printed.task_ended()
    (head, lines), = frames_of(sent)
    assert head == {"op": "taskout"}
    assert lines == [[7, "out", "a"], [7, "err", "oops"], [7, "out", "bc"]]
    printed.task_ended()
    assert len(sent) == 1  # nothing more to say


def test_a_partial_last_line_is_sent_at_the_task_end_and_a_long_line_is_cut():
    sent: list[bytes] = []
    printed = worker_output(sent)
    printed.write("out", "no newline")
    printed.write("err", "x" * (output.LINE_MAX * 2 + 10))
    printed.task_ended()
    (_, lines), = frames_of(sent)
    assert [None, "out", "no newline"] in lines
    pieces = [text for _, stream, text in lines if stream == "err"]
    assert "".join(pieces) == "x" * (output.LINE_MAX * 2 + 10)
    assert all(len(p) <= output.LINE_MAX for p in pieces)


def test_a_slot_sends_at_most_its_burst_and_counts_the_rest():
    sent: list[bytes] = []
    printed = worker_output(sent)
    printed.write("out", "line\n" * (output.BURST + 500))
    printed.task_ended()
    frames = frames_of(sent)
    shown = sum(len(lines) for _, lines in frames)
    dropped = sum(head.get("dropped", 0) for head, _ in frames)
    assert output.BURST <= shown < output.BURST + 50  # (a few refilled meanwhile)
    assert shown + dropped == output.BURST + 500


def test_a_forked_child_writes_to_the_original_stream_not_the_channel():
    sent: list[bytes] = []
    fallen: list = []
    printed = worker_output(sent, fallen)
    printed.pid = os.getpid() + 1  # (as a child sees it: not the process that made it)
    printed.write("out", "from a child\n")
    printed.task_ended()
    assert sent == [] and fallen == [("out", "from a child\n")]


def test_the_controller_prefixes_each_line_escapes_control_characters_and_counts_drops():
    got: list[tuple[str, str]] = []
    shown = Shown(write=lambda where, line: got.append((where, line)))
    payload = json.dumps([[3, "out", "fine"], [None, "err", "\x1b[31mred\x1b[0m"],
                          ["bad"], [1, "out", 5]]).encode()
    shown.take("n2", {"op": "taskout", "dropped": 4}, payload)
    shown.take("n2", {"op": "taskout"}, b"not json")
    assert got == [("n2[3]", "fine"), ("n2", "?[31mred?[0m")]
    assert shown.dropped_on_nodes == 4
    assert f"{output.RATE:.0f} a second from one slot" in shown.summary()
    shown.close()
    assert got[-1] == ("clusterctl", "task output dropped: 4 lines on the nodes (over "
                       f"{output.RATE:.0f} a second from one slot)")
    assert shown.summary() is None


def test_quiet_shows_nothing_but_still_counts_what_nodes_dropped():
    got: list = []
    shown = Shown(quiet=True, write=lambda where, line: got.append(line))
    shown.take("n1", {"op": "taskout", "dropped": 2}, json.dumps([[0, "out", "x"]]).encode())
    assert got == [] and shown.dropped_on_nodes == 2


class _Loop:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, conn, frame: bytes) -> None:
        self.sent.append((conn, wire.frame_head(frame), frame))


class _Conn:
    def __init__(self) -> None:
        self.closed = False


def test_a_node_keeps_a_processs_last_lines_and_fewer_once_it_ended():
    from clusterctl.node.processes import printed as kept

    keeper = kept.Printed(_Loop())
    for i in range(kept.LINES_KEPT + 5):
        keeper.add("n1.1", json.dumps([[None, "out", f"line {i}"]]).encode(), None)
    assert len(keeper.lines["n1.1"]) == kept.LINES_KEPT and keeper.lines["n1.1"][0][2] == "line 5"
    keeper.ended("n1.1", "normal")
    assert [line[2] for line in keeper.lines["n1.1"]] == \
        [f"line {i}" for i in range(kept.LINES_KEPT + 5 - kept.ENDED_LINES_KEPT, kept.LINES_KEPT + 5)]
    for i in range(2, kept.ENDED_KEPT + 3):  # more ended processes than are kept: the oldest go
        keeper.add(f"n1.{i}", json.dumps([[None, "err", "x"]]).encode(), 3)
        keeper.ended(f"n1.{i}", "normal")
    assert "n1.1" not in keeper.lines and "n1.2" not in keeper.lines and "n1.3" in keeper.lines
    assert len(keeper.lines) == kept.ENDED_KEPT and keeper.dropped["n1.3"] == 3


def test_a_follower_gets_each_line_tagged_and_the_end_and_a_closed_one_nothing():
    from clusterctl.node.processes import printed as kept

    loop = _Loop()
    keeper = kept.Printed(loop)
    keeper.add("n1.1", json.dumps([[None, "out", "before"]]).encode(), None)
    following, gone = _Conn(), _Conn()
    answer = wire.frame_head(keeper.logs(following, 7, "n1.1", 5, True, "t1"))
    keeper.logs(gone, 8, "n1.1", None, True, "t2")
    assert answer == {"op": "logged", "id": 7, "pid": "n1.1", "running": True}
    gone.closed = True
    keeper.add("n1.1", json.dumps([[None, "out", "after"]]).encode(), None)
    keeper.ended("n1.1", "killed")
    assert [(conn, head) for conn, head, _ in loop.sent] == [
        (following, {"op": "taskout", "tag": "t1"}),
        (following, {"op": "taskout", "tag": "t1", "ended": "killed"})]
    assert loop.sent[0][2].endswith(json.dumps([[None, "out", "after"]]).encode())
    keeper.add("n1.1", b"[]", None)  # (followers of an ended process are gone with it)
    assert len(loop.sent) == 2
