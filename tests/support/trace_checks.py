"""What every trace file must be, checked the same way by the tests that write one."""

from __future__ import annotations

from collections import Counter, defaultdict


def check_format(data: dict) -> None:
    """The Chrome trace format's rules, as Perfetto needs them."""
    events = data["traceEvents"]
    assert events and isinstance(data["metadata"], dict)
    for e in events:
        assert {"ph", "pid", "name"} <= set(e), e
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and "tid" in e, e
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
    slices = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for key, spans in slices.items():  # strictly nested on each thread
        stack: list[float] = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start + 1e-3:
                stack.pop()
            # (times are microseconds with three decimals: a nanosecond is float rounding)
            assert not stack or end <= stack[-1] + 1e-3, f"overlapping slices on {key}: {start}-{end}"
            stack.append(end)
    flows = defaultdict(Counter)
    for e in events:
        if e["ph"] in ("s", "f"):
            flows[(e["cat"], e["id"])][e["ph"]] += 1
    assert all(c == Counter({"s": 1, "f": 1}) for c in flows.values()), flows
