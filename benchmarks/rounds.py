"""What the window benchmarks share: their command line, and rounds run each in a fresh directory."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
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


def measured(script: str, rounds: int, cores_note: str = "") -> str:
    """The opening of a results file's method line: when, the command, and the machine."""
    return (f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/{script} --rounds {rounds}` on "
            f"{os.cpu_count()} cores{cores_note}, {platform.python_implementation()} {platform.python_version()}, "
            "nats-server 2.15.1 on loopback, Pulumi CLI v3.259.0")
