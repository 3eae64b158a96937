"""How long a moving subject has no stream during `pulumi up`, per phase move.

A publisher sends to a subject of each moving group every millisecond and retries
on no-responders (as services must); every retried stretch is an unowned window.
Runs the real program on a throwaway nats-server through the real Pulumi CLI and
writes benchmarks/RESULTS-unowned-window.md.

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
from tests.traffic import Publisher  # noqa: E402

MOVES = [(0, 1, "vendor.oura.sleep"), (1, 2, "athlete-ally.hrv.raw-received"),
         (2, 1, "athlete-ally.hrv.raw-received"), (1, 0, "vendor.oura.sleep")]


def one_round(workdir: Path) -> dict[tuple[int, int], tuple[float, int]]:
    server = NatsServer(workdir, name="window").start()
    results = {}
    try:
        project = PulumiProject(workdir, config={"phase": 0, "natsUrl": server.url, "replicas": 1,
                                                 "allowDataLoss": ["AA_VENDOR_HOT", "AA_CORE_HOT"]})
        project.up()
        for old, new, subject in MOVES:
            publisher = Publisher(server.url, (subject,), interval=0.001, prefix=f"w{old}{new}").start()
            time.sleep(0.5)
            project.set("phase", new)
            project.up()
            time.sleep(0.5)
            publisher.stop()
            longest = max((gap for _, gap in publisher.gaps), default=0.0)
            results[(old, new)] = (longest, publisher.retries)
    finally:
        server.stop()
    return results


def main() -> int:
    args = rounds_cli.parse(__doc__, 3, ROOT / "benchmarks" / "RESULTS-unowned-window.md")
    rounds = rounds_cli.run(one_round, args.rounds)
    lines = [
        "# The unowned window",
        "",
        rounds_cli.measured("unowned_window.py", args.rounds) + ". A publisher sends every 1 ms to one subject of the moving group and retries "
        "on no-responders every 1 ms; the window is the longest stretch from a first refused publish to the next "
        "stored one (so it includes up to one retry interval).",
        "",
        "| move | subject | longest window, median of rounds (ms) | worst round (ms) | refused publishes per move (median) |",
        "|---|---|---:|---:|---:|",
    ]
    for old, new, subject in MOVES:
        windows = [r[(old, new)][0] * 1000 for r in rounds]
        retries = [r[(old, new)][1] for r in rounds]
        lines.append(f"| {old} → {new} | `{subject}` | {statistics.median(windows):.1f} | {max(windows):.1f} | "
                     f"{statistics.median(retries):.0f} |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
