"""The numbers a pmap runs by, in one place (docs/how-it-works.md lists them with why).

Why each is what it is: section "pmap: chunks, windows and read-ahead".
"""

DEFAULT_POISON_AFTER = 3
TARGET_CHUNK_SECONDS = 0.02  # a chunk's compute time: per-message overhead is ~1% of it
MAX_CHUNK_SECONDS = 1.0  # ... longer with many slots, so the controller keeps up, but not beyond
CONTROLLER_SHARE = 0.05  # the controller's CPU for the messages of all slots: at most this share
COST_SAMPLE_CHUNKS = 16  # the controller's own cost per chunk is measured over this many answers
MIN_CHUNK_SECONDS = 0.002  # near the end of a known input, chunks shrink, but not below this
MAX_CHUNK_ITEMS = 50_000
MAX_CHUNK_BYTES = 8 << 20  # pickled items (or results) of one chunk, when items are small
MAX_INFLIGHT_BYTES = 256 << 20  # pickled items in flight over all nodes (one chunk per node always)
MAX_BUFFERED_BYTES = 256 << 20  # finished results held back to keep the input order
READ_AHEAD_ITEMS = 100_000  # ordered: items read but not handed out yet, at most
MIN_DEPTH, MAX_DEPTH = 2, 32  # chunks in flight per slot
WAIT_SECONDS = 0.5
PUMP_SECONDS = 0.0005  # while handing out results, read the connections this often
JOIN_GRACE_SECONDS = 3.0  # at the end, how long to wait for nodes still being connected
CANCEL_WAIT_SECONDS = 3.0  # when leaving early, how long to wait for nodes to confirm cancels
SPECULATE_AFTER = 0.05  # a chunk is overdue this long past twice its expected time
SPECULATE_SCAN_SECONDS = 0.25  # while input is still read, look for overdue chunks this often
SPECULATE_EARLY_AFTER = 1.0  # ... and start one again once this long past 4 times its expected time
TIMEOUT_SCAN_SECONDS = 0.1  # with item_timeout, look for chunks over their limit this often
MAX_REJOINS = 3  # times a node lost with the hub joins again through a new one
