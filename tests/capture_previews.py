"""Capture the preview fixtures: real `pulumi preview --json` output from real phase moves.

    python -m tests.capture_previews            # rewrites tests/fixtures/previews/*.json

Each scenario drives this repository's program through the real Pulumi CLI
(`tests.harness.PulumiProject`, its own temporary backend) against a throwaway
nats-server, runs `pulumi preview --json --show-sames` exactly as
`eventbus preview-report` does, and stores what the CLI printed, sanitized by
`sanitize()`: no absolute paths, timestamps, source positions or ports.
Secrets never reach the file: the CLI prints them as "[secret]".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.jetstream.client import ConnectionSettings, JetStream
from tests.harness import PASSPHRASE, ROOT, NatsServer, PulumiProject

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "previews"

#: The server URL every fixture shows, whatever port the capture ran on.
FIXTURE_URL = "nats://127.0.0.1:4222"
#: The arguments `eventbus preview-report` gives `pulumi preview`.
PREVIEW_ARGS = ("--json", "--show-sames")
#: State fields that only say where and when a capture ran (and the gate's probes: random ids, round trips).
_VOLATILE = frozenset({"stackTrace", "sourcePosition", "created", "modified", "probes"})
_PROVIDER_ID = re.compile(r"(pulumi:providers:[\w-]+::default::)[0-9a-f-]{36}")
_ABSOLUTE = re.compile(r"(?<![\w.:/>])/(?:[\w.+-]+/)+")
LEGACY_URN = "urn:pulumi:test::aa-event-bus::aa:eventbus:EventBus$pulumi-python:dynamic/jetstream:Stream::ATHLETE_ALLY_EVENTS"


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _paths(message: str, workdir: Path) -> str:
    for path, placeholder in ((str(workdir), "<tmp>"), (str(ROOT), "<repo>"), (sys.base_prefix, "<python>"),
                              (str(Path.home()), "~")):
        message = message.replace(path, placeholder)
    return _ABSOLUTE.sub("<path>/", message)


def sanitize(stdout: str, server_url: str, workdir: Path) -> dict:
    """The preview JSON without anything specific to the machine or the run that captured it."""
    text = _PROVIDER_ID.sub(r"\g<1>00000000-0000-0000-0000-000000000000", stdout.replace(server_url, FIXTURE_URL))
    preview = _strip(json.loads(text))
    preview["duration"] = 0
    for diag in preview.get("diagnostics") or []:
        diag["message"] = _paths(str(diag.get("message", "")), workdir)
    dump = json.dumps(preview)
    for leak in (str(workdir), str(ROOT), str(Path.home()) + "/", PASSPHRASE):
        if leak in dump:
            raise AssertionError(f"{leak!r} would reach a preview fixture")
    return preview


class Capture:
    """One Pulumi stack on one throwaway server, and the previews taken of it."""

    def __init__(self, workdir: Path, server: NatsServer, name: str) -> None:
        self.workdir = workdir / name
        self.server = server
        self.project = PulumiProject(self.workdir, config={"phase": 0, "natsUrl": server.url, "replicas": 1})
        self.js = JetStream(ConnectionSettings(servers=server.url))
        self.taken: dict[str, tuple[dict, int]] = {}

    def preview(self, name: str, *extra: str) -> tuple[dict, int]:
        done: subprocess.CompletedProcess[str] = self.project.preview(*PREVIEW_ARGS, *extra, check=False)
        if not done.stdout.strip():
            raise AssertionError(f"pulumi preview printed no JSON for {name}: {done.stderr[-2000:]}")
        self.taken[name] = (sanitize(done.stdout, self.server.url, self.workdir), done.returncode)
        return self.taken[name]


def _wipe(js: JetStream) -> None:
    for stream in js.stream_names():
        js.stream_delete(stream)


def phase_moves(cap: Capture) -> None:
    """No change; 0→1; 2→1 (a rollback); 2→3 keeping a stream with data, not allowed in the
    same change, and allowed once applied."""
    p, js = cap.project, cap.js
    p.up()
    js.publish("sleep.legacy", b"kept in the legacy stream; no durable reads sleep.*")
    cap.preview("no_change")
    p.set("phase", 1)
    cap.preview("phase_0_to_1")
    p.up()
    p.set("phase", 2)
    p.up()
    p.set("phase", 1)
    cap.preview("phase_2_to_1")
    p.set("phase", 3)
    cap.preview("phase_2_to_3_kept")
    p.set("allowDataLoss", ["ATHLETE_ALLY_EVENTS"])
    cap.preview("phase_2_to_3_allow_not_applied")
    p.set("phase", 2)
    p.up()
    p.set("phase", 3)
    cap.preview("phase_2_to_3_allowed")


def replacements(cap: Capture) -> None:
    """A storage change on streams holding messages (the providers refuse it while previewing),
    and a forced replacement of the legacy stream holding messages."""
    p, js = cap.project, cap.js
    p.up()
    js.publish("dlq.capture", b"in AA_DLQ")
    js.publish("sleep.capture", b"in ATHLETE_ALLY_EVENTS")
    p.set("storage", "memory")
    cap.preview("storage_change_with_messages")
    p.unset("storage")
    cap.preview("forced_replace_with_messages", "--replace", LEGACY_URN)


SCENARIOS: dict[str, Callable[[Capture], None]] = {"phase-moves": phase_moves, "replacements": replacements}


def capture_all(workdir: Path) -> dict[str, tuple[dict, int]]:
    """Run every scenario on a fresh server; {fixture name: (sanitized preview, pulumi exit code)}."""
    server = NatsServer(workdir, name="capture").start()
    taken: dict[str, tuple[dict, int]] = {}
    try:
        for name, scenario in SCENARIOS.items():
            cap = Capture(workdir, server, name)
            _wipe(cap.js)
            scenario(cap)
            taken.update(cap.taken)
    finally:
        server.stop()
    return taken


def write(taken: dict[str, tuple[dict, int]], out: Path = FIXTURES) -> list[Path]:
    """One file per preview, as the CLI printed it (sanitized): `--from-file` reads it as is."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (preview, _code) in sorted(taken.items()):
        path = out / f"{name}.json"
        path.write_text(json.dumps(preview, indent=2) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def load(name: str) -> dict:
    """A committed preview fixture."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="previews-") as tmp:
        for path in write(capture_all(Path(tmp))):
            print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
