"""What the window benchmarks share: their command line, and rounds run each in a fresh directory."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def parse(doc: str, rounds: int, out: Path) -> argparse.Namespace:
    """`--rounds` (default `rounds`) and `--out` (default `out`), described by the script's first doc line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", default=str(out))
    return parser.parse_args()


def run(one_round: Callable[[Path], T], count: int) -> list[T]:
    """`one_round` `count` times, each in its own temporary directory (removed after)."""
    results = []
    for _ in range(count):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(one_round(Path(tmp)))
    return results
