"""Durations: human units in config ("48h", "2m", "1h30m", "500ms"), nanoseconds on the wire."""

from __future__ import annotations

import re

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000
M = 60 * S
H = 60 * M
D = 24 * H

_UNITS = {"ns": NS, "us": US, "µs": US, "ms": MS, "s": S, "m": M, "h": H, "d": D}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(value: str | int | float) -> int:
    """Parse a duration into nanoseconds.

    Strings take Go-style units, including compounds ("1h30m") and days ("14d");
    "0" means zero. Integers are taken as nanoseconds (what the server reports).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '48h', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    text = value.strip()
    if text in ("0", ""):
        return 0
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r}: use a number and a unit, e.g. '48h', '2m', '500ms', '14d'")
    return int(round(total))


def format_duration(ns: int) -> str:
    """The canonical human form of a nanosecond count: "48h", "14d", "2m", "1h30m", "0"."""
    if ns == 0:
        return "0"
    if ns < 0:
        return f"-{format_duration(-ns)}"
    if ns % D == 0 and ns >= 7 * D:
        return f"{ns // D}d"
    if ns % S:
        for unit, size in (("ms", MS), ("us", US)):
            if ns % size == 0:
                return f"{ns // size}{unit}"
        return f"{ns}ns"
    parts, rest = [], ns
    for unit, size in (("h", H), ("m", M), ("s", S)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def ns(value: str) -> int:
    """Nanoseconds of a canonical `Duration` value."""
    return parse_duration(value)
