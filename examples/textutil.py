"""Helpers for wordstats.py (an ordinary module next to the script)."""

import re

WORD = re.compile(r"[A-Za-z']+")


def words(text: str) -> list[str]:
    return WORD.findall(text)


def vowels(text: str) -> int:
    return sum(text.lower().count(v) for v in "aeiou")
