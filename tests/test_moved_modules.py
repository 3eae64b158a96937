"""Stack state written before the layout by layer names the providers by their old modules."""

from __future__ import annotations

import pickle

import pytest

from components.pulumi.consumer import ConsumerProvider
from components.pulumi.gate import PhaseGateProvider
from components.pulumi.stream import StreamProvider


@pytest.mark.parametrize(("old_module", "name", "cls"), [
    ("components.stream", "StreamProvider", StreamProvider),
    ("components.consumer", "ConsumerProvider", ConsumerProvider),
    ("components.gate", "PhaseGateProvider", PhaseGateProvider),
])
def test_unpickle_provider_by_its_old_module_path_gives_the_moved_class(old_module: str, name: str, cls: type) -> None:
    # A protocol-0 GLOBAL opcode: exactly how a pickle by reference names a class.
    assert pickle.loads(f"c{old_module}\n{name}\n.".encode()) is cls


def test_import_of_an_unknown_old_module_still_fails() -> None:
    with pytest.raises(ModuleNotFoundError):
        __import__("components.no_such_module")
