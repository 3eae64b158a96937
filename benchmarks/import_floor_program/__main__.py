"""The floor program (benchmarks/floor_program) after importing what benchmarks/scale_program imports.

Nothing imported here is used: the difference from the floor is what loading this
project's modules (pydantic and the specs) costs the program, and through
Pulumi.yaml's providerPreload, the provider process.
"""

import runpy
from pathlib import Path

import components.jetstream.settings  # noqa: F401
import components.pulumi.consumer  # noqa: F401
import components.pulumi.stream  # noqa: F401
import components.spec.consumer  # noqa: F401
import components.spec.stream  # noqa: F401

# The floor program is copied beside this one by the benchmark (tests.harness copies only these two files).
runpy.run_path(str(Path(__file__).with_name("floor_main.py")), run_name="__main__")
