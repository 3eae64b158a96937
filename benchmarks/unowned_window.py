"""How long a moving subject has no stream during `pulumi up`, per phase move.

A publisher sends to a subject of each moving group every millisecond and retries
on no-responders (as services must); every retried stretch is an unowned window.
Runs the real program on a throwaway nats-server through the real Pulumi CLI, for
the seeds' table and for examples/topology-orders.yaml (where a stream narrows:
both of its regions' subjects are sent to on every move, the one that moves and the
one that stays), and writes benchmarks/RESULTS-unowned-window.md.

    python benchmarks/unowned_window.py [--rounds 3]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import rounds as rounds_cli  # noqa: E402
from tests.harness import NatsServer, PulumiProject  # noqa: E402
from tests.test_topology_data import example  # noqa: E402
from tests.traffic import Publisher  # noqa: E402

MOVES = [(0, 1, "vendor.oura.sleep"), (1, 2, "athlete-ally.hrv.raw-received"),
         (2, 1, "athlete-ally.hrv.raw-received"), (1, 0, "vendor.oura.sleep")]
#: The orders table: every move sends to both regions; which one moves, per move.
ORDERS_SUBJECTS = ("orders.eu.created", "orders.us.created")
ORDERS_MOVES = [(0, 1, "orders.eu.created"), (1, 2, "orders.us.created"), (2, 1, "orders.us.created"),
                (1, 0, "orders.eu.created")]

Result = dict[tuple[int, int, str], tuple[float, int]]


def walk(workdir: Path, config: dict, moves: list[tuple[int, int, tuple[str, ...]]]) -> Result:
    """(old, new, subject) -> (longest unowned window in s, refused publishes) for each move."""
    server = NatsServer(workdir, name="window").start()
    results: Result = {}
    try:
        project = PulumiProject(workdir, config={"phase": 0, "natsUrl": server.url, "replicas": 1, **config})
        project.up()
        for old, new, subjects in moves:
            publisher = Publisher(server.url, subjects, interval=0.001, prefix=f"w{old}{new}").start()
            time.sleep(0.5)
            project.set("phase", new)
            project.up()
            time.sleep(0.5)
            publisher.stop()
            for subject in subjects:
                gaps = [gap for s, gap in publisher.gaps if s == subject]
                results[(old, new, subject)] = (max(gaps, default=0.0), len(gaps))
    finally:
        server.stop()
    return results


def one_round(workdir: Path) -> tuple[Result, Result]:
    seeds = walk(workdir / "seeds", {"allowDataLoss": ["AA_VENDOR_HOT", "AA_CORE_HOT"]},
                 [(old, new, (subject,)) for old, new, subject in MOVES])
    orders = walk(workdir / "orders", {"topology": example("orders")},
                  [(old, new, ORDERS_SUBJECTS) for old, new, _ in ORDERS_MOVES])
    return seeds, orders


def main() -> int:
    args = rounds_cli.parse(__doc__, 3, ROOT / "benchmarks" / "RESULTS-unowned-window.md")
    rounds = rounds_cli.run(one_round, args.rounds)
    seeds, orders = [r[0] for r in rounds], [r[1] for r in rounds]
    lines = [
        "# The unowned window",
        "",
        rounds_cli.measured("unowned_window.py", args.rounds) + ". A publisher sends every 1 ms to one subject of the moving group and retries "
        "on no-responders every 1 ms; the window is the longest stretch from a first refused publish to the next "
        "stored one (so it includes up to one retry interval).",
        "",
        "| move | subject | longest window, median of rounds (ms) | worst round (ms) | unowned stretches per move (median) |",
        "|---|---|---:|---:|---:|",
    ]
    def row(results: list[Result], old: int, new: int, subject: str, label: str) -> None:
        windows = [r[(old, new, subject)][0] * 1000 for r in results]
        refused = [r[(old, new, subject)][1] for r in results]
        lines.append(f"| {old} → {new} | `{subject}`{label} | {statistics.median(windows):.1f} | {max(windows):.1f} | "
                     f"{statistics.median(refused):.0f} |")
        print(lines[-1], flush=True)

    for old, new, subject in MOVES:
        row(seeds, old, new, subject, "")
    lines += [
        "",
        "The orders table (examples/topology-orders.yaml), both regions sent to on every move; in 0 → 1 ORDERS "
        "narrows from `orders.>` to `orders.us.>` as it releases `orders.>` for ORDERS_EU:",
        "",
        "| move | subject | longest window, median of rounds (ms) | worst round (ms) | unowned stretches per move (median) |",
        "|---|---|---:|---:|---:|",
    ]
    for old, new, moving in ORDERS_MOVES:
        for subject in ORDERS_SUBJECTS:
            row(orders, old, new, subject, " (moves)" if subject == moving else " (stays)")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
