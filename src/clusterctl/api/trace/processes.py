"""Spawned processes in a trace: their lives and messages as a node recorded them
(``node/workers/tracing.py``: "proc" and "msg" events), laid out for Perfetto, and read back.

On a node's track, each process is a thread (``process n1.3 (kvs)``) holding one slice
for its life in the trace (from its spawn, or the start, to its end, or the end), an
instant for each message it was delivered (or, to another node, sent), and for its
restart; a flow arrow goes from sender to receiver of a message within a node.
"""

from __future__ import annotations

from collections import defaultdict

PROCESS_TIDS = 10_000  # a node's process threads are numbered from here (slots below)


def lay_out(events: list, raw, pids: dict, us, flows) -> None:
    for name, node in raw.nodes.items():
        if node.offset is None:
            continue
        mine = sorted((e for e in node.events if e and e[0] in ("proc", "msg")), key=lambda e: e[1])
        if not mine:
            continue
        pid = pids[name]
        tids: dict[str, int] = {}
        lives: dict[str, dict] = {}

        def thread(ident: str, label: str | None = None, pname: str | None = None) -> int:
            tid = tids.get(ident)
            if tid is None:
                tid = tids[ident] = PROCESS_TIDS + len(tids)
                lives[ident] = {"start": us(raw.started), "end": us(raw.finished), "label": label,
                                "name": pname, "exit": None}
            return tid

        for event in mine:
            if event[0] == "proc":
                _, t, ident, what, detail, pname = (event + [None] * 6)[:6]
                tid = thread(ident, detail if what in ("spawn", "running") else None, pname)
                life = lives[ident]
                life["name"] = life["name"] or pname
                at = us(t - node.offset)
                if what in ("spawn", "restart"):
                    life["start"] = at
                    life["label"] = life["label"] or (detail if what == "spawn" else None)
                    if what == "restart":  # (detail: the id of the process it replaces)
                        events.append(_instant(pid, tid, at, f"restarted (was {detail})", "process"))
                elif what == "running":
                    life["label"] = life["label"] or detail
                elif what == "exit":
                    life["end"], life["exit"] = at, detail
            else:
                _, t, sender, to, size, where = event[:6]
                at = us(t - node.offset)
                target = thread(sender) if where == "out" else thread(to)
                what = f"to {to}" if where == "out" else f"from {sender or 'a program'}"
                events.append(_instant(pid, target, at, "message " + what, "message",
                                       {"from": sender, "to": to, "bytes": size, "where": where}))
                if where == "local" and sender in tids:
                    flows.add("message", (pid, tids[sender], at), (pid, target, at))
        for ident, tid in tids.items():
            life = lives[ident]
            title = f"process {ident}" + (f" ({life['name']})" if life["name"] else "")
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"name": title}})
            start, end = life["start"], max(life["end"], life["start"])
            events.append({"name": life["label"] or ident, "ph": "X", "pid": pid, "tid": tid,
                           "ts": start, "dur": round(end - start, 3), "cat": "process",
                           "args": {"id": ident, "name": life["name"], "exit": life["exit"]}})


def _instant(pid: int, tid: int, ts: float, name: str, cat: str, args: dict | None = None) -> dict:
    event = {"name": name, "ph": "i", "s": "t", "pid": pid, "tid": tid, "ts": ts, "cat": cat}
    if args:
        event["args"] = args
    return event


def figures(events: list, by_pid: dict) -> list[dict]:
    """Per process in a trace file: node, name, function, life, messages in (and their
    bytes) and out, and how it ended."""
    found: dict[tuple, dict] = {}
    for e in events:
        if e.get("cat") == "process" and e.get("ph") == "X":
            args = e.get("args") or {}
            found[(e["pid"], args.get("id"))] = {
                "id": args.get("id"), "node": by_pid.get(e["pid"], "?"), "name": args.get("name"),
                "function": e.get("name"), "life_us": e.get("dur"), "messages_in": 0,
                "bytes_in": 0, "messages_out": 0, "exit": args.get("exit")}
    counts = defaultdict(int)
    for e in events:
        if e.get("cat") == "message" and e.get("ph") == "i":
            args = e.get("args") or {}
            where = args.get("where")
            if where != "out":  # (delivered here: counted where it arrived)
                counts[("in", args.get("to"))] += 1
                counts[("bytes", args.get("to"))] += int(args.get("bytes") or 0)
            if where in ("local", "out"):  # (sent from here: counted where it left)
                counts[("out", args.get("from"))] += 1
    for row in found.values():
        row["messages_in"] = counts[("in", row["id"])]
        row["bytes_in"] = counts[("bytes", row["id"])]
        row["messages_out"] = counts[("out", row["id"])]
    return sorted(found.values(), key=lambda r: (r["node"], _number(r["id"])))


def _number(ident) -> int:
    tail = str(ident).rpartition(".")[2]
    return int(tail) if tail.isdigit() else -1
