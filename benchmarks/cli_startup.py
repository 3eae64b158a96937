"""Start-up cost of the `eventbus` CLI: `eventbus --help` wall clock, and what importing the CLI loads.

Three commands, interleaved, RUNS times each: the bare interpreter (`python -c pass`,
the floor), `python -c "import components.cli.main"` and `eventbus --help` (the console
script). Also recorded, from one `python -X importtime` run: the CLI module's cumulative
import time and whether pulumi, grpc, deepdiff, pydantic, nats or yaml were imported.
Wall clock depends on how busy the machine is; CPU time (user + system of the child)
much less, so both are written. With REF set, the same import is also timed from the
`components/` of that git revision (extracted to a temporary directory), for a before/after.
Medians and worst runs go to benchmarks/RESULTS-cli-startup.md.

    python benchmarks/cli_startup.py            # RUNS=15
    REF=a32d501 python benchmarks/cli_startup.py
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("RUNS", "15"))
REF = os.environ.get("REF", "")
BIN = Path(sys.executable).parent
#: Modules `eventbus --help` must not need.
HEAVY = ("pulumi", "grpc", "deepdiff", "pydantic", "nats", "yaml")

CASES = {
    "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
    "python -c 'import components.cli.main'": [sys.executable, "-c", "import components.cli.main"],
    "eventbus --help": [str(BIN / "eventbus"), "--help"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=True, timeout=60)
    return time.perf_counter() - start, _children_cpu() - cpu


def extract(ref: str, into: Path) -> Path:
    """`components/` of git revision `ref`, unpacked under `into`."""
    archive = subprocess.run(["git", "archive", ref, "components"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def import_profile(cwd: Path = ROOT) -> tuple[float, list[str]]:
    """(cumulative import ms of components.cli.main, heavy top-level packages it imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import components.cli.main"], cwd=cwd,
                          capture_output=True, text=True, check=True, timeout=60)
    total, loaded = 0.0, set()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if not cumulative.isdigit():
            continue
        if name == "components.cli.main":
            total = int(cumulative) / 1000
        top = name.split(".")[0]
        if top in HEAVY:
            loaded.add(top)
    return total, sorted(loaded)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cases = {name: (cmd, ROOT) for name, cmd in CASES.items()}
        if REF:
            # The revision's own modules win over the installed (editable) checkout: cwd comes first on sys.path.
            old = extract(REF, Path(tmp))
            cases[f"python -c 'import components.cli.main' at {REF}"] = (CASES[
                "python -c 'import components.cli.main'"], old)
        for cmd, cwd in cases.values():  # warm the file cache and the bytecode
            timed(cmd, cwd)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(RUNS):
            for name, (cmd, cwd) in cases.items():
                samples[name].append(timed(cmd, cwd))
        cumulative, heavy = import_profile()
        before = import_profile(Path(tmp)) if REF else None
    load = os.getloadavg()[0]
    rows = [f"| {name} | {statistics.median(w for w, _ in v) * 1000:.0f} | {max(w for w, _ in v) * 1000:.0f} | "
            f"{statistics.median(c for _, c in v) * 1000:.0f} |" for name, v in samples.items()]
    then = (f" At {REF}: {before[0]:.0f} ms cumulative; heavy packages imported: {', '.join(before[1]) or 'none'}."
            if before else "")
    text = "\n".join([
        "# CLI start-up",
        "",
        f"`python benchmarks/cli_startup.py`, {RUNS} interleaved runs each; Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {load:.1f} when measured. Milliseconds; CPU is user + system of the child.",
        "",
        "| command | median wall | worst wall | median CPU |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"`python -X importtime -c 'import components.cli.main'`: {cumulative:.0f} ms cumulative for the CLI "
        f"module; heavy packages imported: {', '.join(heavy) or 'none'} (checked: {', '.join(HEAVY)}).{then}",
        "",
        "Target: `eventbus --help` under 200 ms. Commands import the stack config model, the",
        "JetStream client and the diagnostics when they run; `preview-report` is imported only",
        "when it is invoked (its one-line help is listed from `components.cli.main`).",
        "",
    ])
    out = ROOT / "benchmarks" / "RESULTS-cli-startup.md"
    out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
