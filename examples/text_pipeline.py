"""A small text pipeline: read a line, normalise it, count its words, and fold the
counts into one table of the most common words.

    clusterctl pipeline examples/text_pipeline.py
    printf '"%s"\n' "the quick brown fox" "the lazy dog" | \
        clusterctl pipeline examples/text_pipeline.py --input -

Stage 1 makes each item a line of text (an item is a line number when the items come
from ``inputs()``), stage 2 lowercases it and drops punctuation, stage 3 counts its
words; the fold adds the counts up, here, as the results come out, and the totals are
printed at the end.
"""

import collections
import string

PANGRAMS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "How vexingly quick daft zebras jump.",
    "The five boxing wizards jump quickly; the dog sleeps.",
]


def inputs():
    return range(2000)


def read(item):
    """A line of text: the item itself, or for a number the pangram it picks."""
    if isinstance(item, int):
        return PANGRAMS[item % len(PANGRAMS)]
    return str(item)


def normalise(line):
    return line.lower().translate(str.maketrans("", "", string.punctuation))


def count(line):
    return dict(collections.Counter(line.split()))


stages = [read, normalise, count]


def fold(totals, counts):
    """Add one line's word counts to the totals."""
    for word, n in counts.items():
        totals[word] = totals.get(word, 0) + n
    return totals


initial = {}
