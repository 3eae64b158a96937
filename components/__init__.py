"""The event bus: JetStream streams and durables managed with Pulumi, and moved between phases safely.

Layers, each importing only the ones above it:

    jetstream/  the client over nats-py, the error vocabulary, the server's state
    spec/       desired state: stream and consumer specs, the stack's config model
    migration/  the engine: phases and plan, hand-over, data-loss policy, verify
    pulumi/     the providers and the EventBus component (the only Pulumi imports)
    cli/        the `eventbus` command
    binding     the library services bind with (nats-py only)
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import importlib.abc

#: Where the providers lived before the layout by layer. Stack state stores each
#: resource's provider pickled by reference (module and class name), so a stack
#: deployed with an older version unpickles these names on its next run.
_MOVED = {
    "components.stream": "components.pulumi.stream",
    "components.consumer": "components.pulumi.consumer",
    "components.gate": "components.pulumi.gate",
}


class _MovedModules:
    """A meta path finder and loader (by protocol: importlib.abc would cost the CLI ~20 ms of start-up)."""

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        loader = cast("importlib.abc.Loader", self)
        return importlib.machinery.ModuleSpec(name, loader) if name in _MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module is already imported under its new name."""


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
