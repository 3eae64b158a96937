"""The real mermaid parser (npm `mermaid`, under jsdom in plain Node), for tests.

scripts/test-deps.sh installs it into tests/mermaid/node_modules from the committed
package-lock.json. `parse_mermaid(*files)` runs tests/mermaid/parse.mjs on files of
Mermaid text or Markdown (each ```mermaid block), and returns one result a diagram:
{"file", "index", "ok", "type"} or {"file", "index", "ok": False, "error"}.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.harness import ROOT

PARSER = ROOT / "tests" / "mermaid" / "parse.mjs"


def parse_mermaid(*files: Path) -> list[dict]:
    node = shutil.which("node")
    if node is None or not (PARSER.parent / "node_modules" / "mermaid").is_dir():
        raise RuntimeError("the mermaid parser is not installed: run `make test-deps` (scripts/test-deps.sh)")
    done = subprocess.run([node, str(PARSER), *map(str, files)], capture_output=True, text=True, timeout=120,
                          check=False, cwd=PARSER.parent)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode not in (0, 1) or not results:
        raise RuntimeError(f"parse.mjs exited {done.returncode}: {done.stderr[-2000:]}")
    return results
