"""How long a moving subject has no stream when a fault hits the hand-over, per fault and move.

A publisher sends to one subject of the moving group every millisecond and retries
on no-responders and timeouts (as services must); the longest retried stretch is the
unowned time. The deploy reaches the server through the loopback proxy of
tests/proxy.py, which injects each fault at the claim that follows the release:

* `none`: the happy path;
* `refused`: the server refuses the gaining stream's config (replicas 3 on one server),
  then the config is fixed and applied;
* `cut`: the connection is cut instead of forwarding the claim;
* `restart`: nats-server restarts (same port and store) before the claim;
* `crash`: every process of the deploy is SIGKILLed before the claim; the operator then
  runs `pulumi cancel` and `pulumi up` at once (the unowned time includes that repair).

Runs the real program through the real Pulumi CLI and writes
benchmarks/RESULTS-fault-window.md.

    python benchmarks/fault_window.py [--rounds 1]
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import rounds as rounds_cli  # noqa: E402
from tests.harness import NatsServer  # noqa: E402
from tests.proxy import CUT_BEFORE, FORWARD  # noqa: E402
from tests.test_faults_deploy import MOVES, Deploy  # noqa: E402
from tests.traffic import Publisher  # noqa: E402

FAULTS = ("none", "refused", "cut", "restart", "crash")
#: A subject of each moving group.
PROBE = {"vendor.>": "vendor.oura.sleep", "athlete-ally.>": "athlete-ally.hrv.raw-received"}


def one_move(deploy: Deploy, fault: str, move: tuple) -> tuple[float, int]:
    old, new, losing, gaining, subject = move
    publisher = Publisher(deploy.server.url, (PROBE[subject],), interval=0.001, prefix=f"{fault}{old}{new}").start()
    time.sleep(0.3)
    deploy.project.set("phase", new)
    if fault == "refused":
        deploy.project.set("replicas", 3)
        deploy.project.up(check=False)
        deploy.project.set("replicas", 1)
        deploy.project.up()
    elif fault == "cut":
        deploy.hook.arm(losing, gaining, lambda: None, CUT_BEFORE)
        deploy.project.up()
    elif fault == "restart":
        deploy.hook.arm(losing, gaining, lambda: (deploy.server.stop(), deploy.server.start()), CUT_BEFORE)
        deploy.project.up()
    elif fault == "crash":
        deploy.hook.arm(losing, gaining, lambda: [os.kill(p, signal.SIGKILL) for p in deploy.processes()], CUT_BEFORE)
        deploy.up_in_background().wait(120)
        deploy.project.run("cancel", "--yes", "--stack", deploy.project.stack, check=False)
        deploy.project.up()
    else:
        deploy.hook.arm(losing, gaining, lambda: None, FORWARD)
        deploy.project.up()
    time.sleep(0.3)
    publisher.stop()
    return max((gap for _, gap in publisher.gaps), default=0.0), publisher.retries


def one_round(workdir: Path) -> dict[tuple[str, int, int], tuple[float, int]]:
    results = {}
    for fault in FAULTS:
        server = NatsServer(workdir / fault, name=fault).start()
        deploy = Deploy(workdir / fault, server)
        try:
            deploy.project.up()
            for move in MOVES:
                results[(fault, move[0], move[1])] = one_move(deploy, fault, move)
                print(fault, move[:2], f"{results[(fault, move[0], move[1])][0] * 1000:.1f} ms", flush=True)
        finally:
            deploy.close()
            server.stop()
    return results


def main() -> int:
    args = rounds_cli.parse(__doc__, 1, ROOT / "benchmarks" / "RESULTS-fault-window.md")
    rounds = rounds_cli.run(one_round, args.rounds)
    lines = [
        "# The unowned window under faults",
        "",
        rounds_cli.measured("fault_window.py", args.rounds, " (shared with other work)") + ", `claimRetryTimeout` 20s. "
        "A publisher sends every 1 ms to one subject of the moving group and retries on no-responders and timeouts; "
        "the figure is the longest stretch from a first refused publish to the next stored one. `refused` includes "
        "the move applied once the config is fixed (the refused `pulumi up` releases nothing); `crash` includes "
        "`pulumi cancel` and `pulumi up` run right after the kill. Every figure also includes the proxy's own "
        f"latency. Load average at the end: {os.getloadavg()[0]:.1f}. The happy-path figures without the proxy "
        "(`benchmarks/unowned_window.py`) are in RESULTS-unowned-window.md.",
        "",
        "| fault | 0 → 1 (ms) | 1 → 2 (ms) | 2 → 1 (ms) | 1 → 0 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for fault in FAULTS:
        cells = [f"{statistics.median(r[(fault, m[0], m[1])][0] for r in rounds) * 1000:.1f}" for m in MOVES]
        lines.append(f"| {fault} | {' | '.join(cells)} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
