"""NATS subject and name rules, checked before anything reaches a server."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_NAME_BAD = re.compile(r"[\s.*>/\\]")


def name_problem(name: str, what: str = "stream") -> str | None:
    """Why `name` is not a valid stream/consumer name, or None when it is."""
    if not name:
        return f"the {what} name is empty"
    if len(name) > 255:
        return f"the {what} name {name!r} is longer than 255 characters"
    if _NAME_BAD.search(name):
        return f"the {what} name {name!r} contains whitespace or one of . * > / \\ (use letters, digits, - and _)"
    return None


def subject_problem(subject: str) -> str | None:
    """Why `subject` is not a valid subject or filter, or None when it is."""
    if not subject:
        return "a subject is empty"
    if any(c.isspace() for c in subject):
        return f"subject {subject!r} contains whitespace"
    tokens = subject.split(".")
    if any(t == "" for t in tokens):
        return f"subject {subject!r} has an empty token (leading, trailing or double '.')"
    for i, token in enumerate(tokens):
        if ">" in token and (token != ">" or i != len(tokens) - 1):
            return f"subject {subject!r}: '>' must be a whole token and the last one"
        if "*" in token and token != "*":
            return f"subject {subject!r}: '*' must be a whole token"
    return None


def subjects_overlap(a: str, b: str) -> bool:
    """True when some concrete subject matches both patterns (wildcards on either side)."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            # '>' needs at least one more token on the other side.
            return (x == ">" and y is not None) or (y == ">" and x is not None)
        if x is None or y is None:
            return False
        if x != y and x != "*" and y != "*":
            return False
    return True


def covers(pattern: str, subject: str) -> bool:
    """True when every subject matched by `subject` is matched by `pattern`."""
    tp, ts = pattern.split("."), subject.split(".")
    for i, p in enumerate(tp):
        if p == ">":
            return len(ts) > i
        if i >= len(ts):
            return False
        s = ts[i]
        if s == ">":
            return False
        if p != "*" and (s == "*" or p != s):
            return False
    return len(ts) == len(tp)


def split_for_claim(held: Sequence[str], claimed: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(released, kept): the subjects of `held` a claim of `claimed` takes whole (those that
    overlap it), and the rest."""
    released = tuple(s for s in held if any(subjects_overlap(s, c) for c in claimed))
    return released, tuple(s for s in held if s not in released)


def kept_in_release(released: Sequence[str], kept: Sequence[str], claimed: Sequence[str],
                    candidates: Iterable[str]) -> tuple[str, ...]:
    """The `candidates` a stream that releases `released` (and keeps `kept`) for a claim of
    `claimed` may keep in the same update: each covered by a released subject, so no other
    stream can own it; overlapping nothing claimed, and clear of `kept`. In order, once each."""
    out: list[str] = []
    for t in candidates:
        if (t not in out and t not in kept and any(covers(r, t) for r in released)
                and not any(subjects_overlap(t, c) for c in claimed)
                and not any(subjects_overlap(t, k) for k in kept)):
            out.append(t)
    return tuple(out)
