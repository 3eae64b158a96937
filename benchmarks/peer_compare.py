"""This project beside OpenTofu + terraform-provider-jetstream, and beside Pulumi's own floor.

For each size (resources = N streams + N durables), and for each of three tools,
A/B interleaved run by run so that machine noise falls on all of them alike:

* `project`: benchmarks/scale_program, this project's Stream and Consumer providers;
* `floor`:   benchmarks/floor_program, the same number of no-op dynamic resources
  in a minimal Python program (no NATS, no project code): the engine's floor;
* `cold`:    with --cold-floor, the floor program without Pulumi.yaml's programPreload: the
  program starts when the engine asks for it, as with Pulumi's own language host (the
  provider still starts with the program);
* `imports`: with --import-floor, benchmarks/import_floor_program: the floor
  program after importing this project's modules, unused, in the program and the
  provider (what loading pydantic and the specs costs, apart from using them);
* `tofu`:    the same streams and consumers as `jetstream_stream` /
  `jetstream_consumer`, through a `tofu` binary and a terraform-provider-jetstream
  binary you built yourself (neither is part of this repository; the tofu half is
  skipped when either is missing).

Each tool gets its own nats-server 2.15.1 on loopback and its own state. Three
operations are timed: create from empty (`pulumi up` / `tofu apply`), an unchanged
plan without refresh (`pulumi preview` / `tofu plan -refresh=false`) and with
refresh (`pulumi preview --refresh` / `tofu plan`). The seed topology's own
unchanged `pulumi preview` (the real program, phase 0) is timed as well.

    python benchmarks/peer_compare.py --sizes 6,200,1000 --runs 3 \
        --tofu PATH/TO/tofu --tf-provider PATH/TO/terraform-provider-jetstream

Prints a Markdown table of medians and ratios (to the file `--out` names, if any).
benchmarks/RESULTS-peer-compare.md is the kept record of such runs, with their dates
and context; a run never overwrites it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import NatsServer, PulumiProject  # noqa: E402

OPERATIONS = ("create", "unchanged", "refresh")
LABELS = {
    "create": "create from empty",
    "unchanged": "unchanged preview / `plan -refresh=false`",
    "refresh": "`preview --refresh` / `plan`",
}

TOFU_MAIN = """
terraform {
  required_providers {
    jetstream = { source = "nats-io/jetstream" }
  }
}
provider "jetstream" {
  servers = "%(url)s"
}
resource "jetstream_stream" "s" {
  count       = %(count)d
  name        = format("BENCH_%%04d", count.index)
  subjects    = ["bench.${count.index}.>"]
  storage     = "file"
  max_age     = 172800
  compression = "s2"
}
resource "jetstream_consumer" "c" {
  count          = %(count)d
  stream_id      = jetstream_stream.s[count.index].id
  durable_name   = "worker"
  deliver_all    = true
  filter_subject = "bench.${count.index}.>"
  ack_wait       = 60
  max_delivery   = 5
}
"""


PROGRAMS = {"project": "scale_program", "floor": "floor_program", "cold": "floor_program",
            "imports": "import_floor_program"}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def without_program_preload(pulumi_yaml: str) -> str:
    """Pulumi.yaml's text without its programPreload option: the program then starts cold."""
    return "".join(line for line in pulumi_yaml.splitlines(keepends=True) if "programPreload:" not in line)


def run_pulumi(kind: str, count: int, workdir: Path) -> dict[str, float]:
    """One create / unchanged / refresh round of a Pulumi program (`project`, `floor`, `cold` or `imports`)."""
    server = NatsServer(workdir, name=f"{kind}{count}").start() if kind == "project" else None
    try:
        program = ROOT / "benchmarks" / PROGRAMS[kind]
        namespace = "jetstream-scale" if kind == "project" else "pulumi-floor"
        config: dict[str, object] = {"count": count}
        if server:
            config["natsUrl"] = server.url
        project = PulumiProject(workdir, stack="bench", namespace=namespace, program=program, config=config)
        project.env["EVENTBUS_RESIDENT"] = "1"  # as an operator's commands run (the tests turn it off)
        if kind == "cold":
            spec = project.dir / "Pulumi.yaml"
            spec.write_text(without_program_preload(spec.read_text()))
        if kind == "imports":
            shutil.copy(ROOT / "benchmarks" / "floor_program" / "__main__.py", project.dir / "floor_main.py")
        return {
            "create": timed(lambda: project.up(timeout=3600)),
            "unchanged": timed(lambda: project.preview("--expect-no-changes", timeout=3600)),
            "refresh": timed(lambda: project.preview("--refresh", "--expect-no-changes", timeout=3600)),
        }
    finally:
        if server:
            server.stop()


def run_tofu(tofu: Path, provider: Path, count: int, workdir: Path) -> dict[str, float]:
    """The same round with OpenTofu; the provider is found through a dev override (no registry)."""
    server = NatsServer(workdir, name=f"tofu{count}").start()
    try:
        (workdir / "main.tf").write_text(TOFU_MAIN % {"url": server.url, "count": count})
        rc = workdir / "tofurc"
        overrides = f'    "nats-io/jetstream" = "{provider.parent}"\n'
        rc.write_text("provider_installation {\n  dev_overrides {\n" + overrides + "  }\n  direct {}\n}\n")
        env = {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}

        def tofu_run(*args: str, ok: tuple[int, ...] = (0,)) -> None:
            done = subprocess.run([str(tofu), *args, "-no-color", "-input=false"], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=3600, check=False)
            if done.returncode not in ok:
                raise RuntimeError(f"tofu {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")

        return {
            "create": timed(lambda: tofu_run("apply", "-auto-approve")),
            "unchanged": timed(lambda: tofu_run("plan", "-refresh=false", "-detailed-exitcode")),
            "refresh": timed(lambda: tofu_run("plan", "-detailed-exitcode")),
        }
    finally:
        server.stop()


#: The seed topology's other timings, as the results name them.
LABELS_SEED = {"cold": "Without programPreload (cold)", "no resident": "Without the resident (EVENTBUS_RESIDENT=0)"}


def seed_preview(runs: int, cold: bool = False, no_resident: bool = False) -> dict[str, list[float]]:
    """The real program's unchanged `pulumi preview` on the seeds' phase-0 topology, as an operator's
    commands run (with the resident): {"warm": [...]}; with `cold`, interleaved, also without
    Pulumi.yaml's programPreload ("cold"); with `no_resident`, also with EVENTBUS_RESIDENT=0
    ("no resident": each command's warm program imports everything itself)."""
    times: dict[str, list[float]] = {"warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp), name="seed").start()
        try:
            project = PulumiProject(Path(tmp), stack="bench", config={"phase": 0, "natsUrl": server.url, "replicas": 1})
            project.env["EVENTBUS_RESIDENT"] = "1"
            project.up()
            spec = project.dir / "Pulumi.yaml"
            warm_yaml = spec.read_text()
            cold_yaml = without_program_preload(warm_yaml)
            for _ in range(runs):
                spec.write_text(warm_yaml)
                times["warm"].append(timed(lambda: project.preview("--expect-no-changes")))
                if no_resident:
                    project.env["EVENTBUS_RESIDENT"] = "0"
                    times.setdefault("no resident", []).append(timed(lambda: project.preview("--expect-no-changes")))
                    project.env["EVENTBUS_RESIDENT"] = "1"
                if cold:
                    spec.write_text(cold_yaml)
                    times.setdefault("cold", []).append(timed(lambda: project.preview("--expect-no-changes")))
        finally:
            server.stop()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="6,200,1000", help="resources per size (streams + durables), even")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tofu", default=os.environ.get("TOFU") or shutil.which("tofu"))
    parser.add_argument("--tf-provider", default=os.environ.get("TF_PROVIDER_JETSTREAM"))
    parser.add_argument("--import-floor", action="store_true",
                        help="also time the floor program after importing this project's modules (unused)")
    parser.add_argument("--cold-floor", action="store_true",
                        help="also time the floor program started cold (without programPreload)")
    parser.add_argument("--seed-runs", type=int, default=0, help="seed topology previews (default: runs, at least 5)")
    parser.add_argument("--seed-without-resident", action="store_true",
                        help="also time the seed topology's preview with EVENTBUS_RESIDENT=0, interleaved")
    parser.add_argument("--seed-only", action="store_true", help="time only the seed topology's preview")
    parser.add_argument("--out", help="write the table to this file too (default: print it only)")
    args = parser.parse_args()
    tofu = Path(args.tofu) if args.tofu and Path(args.tofu).exists() else None
    provider = Path(args.tf_provider) if args.tf_provider and Path(args.tf_provider).exists() else None
    tools = (["project", "floor"] + (["cold"] if args.cold_floor else []) + (["imports"] if args.import_floor else [])
             + (["tofu"] if tofu and provider else []))
    if "tofu" not in tools:
        print("tofu or terraform-provider-jetstream not given: measuring this project and the floor only", flush=True)

    sizes = [] if args.seed_only else [int(s) for s in args.sizes.split(",")]
    results: dict[tuple[int, str, str], list[float]] = {}
    for size in sizes:
        count = size // 2
        for run in range(args.runs):
            order = tools[run % len(tools):] + tools[: run % len(tools)]  # rotate who goes first
            for tool in order:
                with tempfile.TemporaryDirectory() as tmp:
                    if tool == "tofu":
                        assert tofu and provider
                        row = run_tofu(tofu, provider, count, Path(tmp))
                    else:
                        row = run_pulumi(tool, count, Path(tmp))
                for op, seconds in row.items():
                    results.setdefault((size, tool, op), []).append(seconds)
                print(f"{size:5d} resources, run {run + 1}, {tool:7s}: "
                      + ", ".join(f"{op} {s:.2f}s" for op, s in row.items()), flush=True)
    seeds = seed_preview(args.seed_runs or max(args.runs, 5), cold=args.cold_floor, no_resident=args.seed_without_resident)
    seed = seeds["warm"]
    print("seed topology unchanged preview: " + ", ".join(
        f"{kind} median {statistics.median(values):.2f}s" for kind, values in seeds.items()), flush=True)

    def med(size: int, tool: str, op: str) -> float | None:
        values = results.get((size, tool, op))
        return statistics.median(values) if values else None

    def fmt(v: float | None, unit: str = "") -> str:
        return "—" if v is None else f"{v:.2f}{unit}"

    lines = [
        "# Plan and apply beside OpenTofu + terraform-provider-jetstream",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/peer_compare.py --sizes {args.sizes} "
        f"--runs {args.runs}{' --cold-floor' if args.cold_floor else ''}{' --import-floor' if args.import_floor else ''} --tofu ... --tf-provider ...` on {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, nats-server 2.15.1 on loopback for each tool, "
        "local state (Pulumi: file backend; tofu: local terraform.tfstate). Seconds, median of the runs, A/B "
        "interleaved. `floor` is the same resources as no-op dynamic resources in a minimal Python program; "
        "`overhead` is (project − floor) / floor."
        + (" `floor + imports` is the floor program after importing this project's modules, unused, in the program "
           "and the provider." if args.import_floor else ""),
        "",
        "| resources | operation | this project | Pulumi floor | overhead on floor | "
        + ("cold floor | " if args.cold_floor else "") + ("floor + imports | " if args.import_floor else "")
        + "tofu | project / tofu |",
        "|---:|---|---:|---:|---:|" + ("---:|" if args.cold_floor else "") + ("---:|" if args.import_floor else "")
        + "---:|---:|",
    ]
    for size in sizes:
        for op in OPERATIONS:
            ours, floor, theirs = med(size, "project", op), med(size, "floor", op), med(size, "tofu", op)
            overhead = f"{100 * (ours - floor) / floor:.0f}%" if ours and floor else "—"
            ratio = f"{ours / theirs:.2f}×" if ours and theirs else "—"
            cold = f" {fmt(med(size, 'cold', op))} |" if args.cold_floor else ""
            imports = f" {fmt(med(size, 'imports', op))} |" if args.import_floor else ""
            lines.append(f"| {size} | {LABELS[op]} | {fmt(ours)} | {fmt(floor)} | {overhead} |{cold}{imports} "
                         f"{fmt(theirs)} | {ratio} |")
    lines += [
        "",
        f"Seed topology (the real program, phase 0, 7 resources): unchanged `pulumi preview` median "
        f"{statistics.median(seed):.2f}s over {len(seed)} runs (min {min(seed):.2f}s, max {max(seed):.2f}s)."
        + "".join(f" {LABELS_SEED[kind]}, interleaved: median {statistics.median(values):.2f}s "
                  f"(min {min(values):.2f}s, max {max(values):.2f}s)." for kind, values in seeds.items() if kind != "warm"),
    ]
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
