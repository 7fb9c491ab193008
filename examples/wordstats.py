"""Statistics of lines of text, using a helper module that sits next to this script.

    printf '"%s"\n' "the quick brown fox" "jumps over the lazy dog" | \
        clusterctl pmap examples/wordstats.py

Each item is a string (one JSON string a line on stdin); each result is
``{"words": N, "longest": WORD, "vowels": N}``. ``textutil.py`` is not installed on the
nodes: like this script, it travels with the function.
"""

from textutil import vowels, words


def task(line: str) -> dict:
    found = words(line)
    return {"words": len(found), "longest": max(found, key=len, default=""),
            "vowels": vowels(line)}
