"""The topology as data: the example tables, their phases, and every rule of a table broken once.

Pure: the config parser and `phase_topology`, no server. The orders table walks on real
servers in tests/test_walk_orders.py; a bad table through the real `pulumi preview` is
in tests/test_config_catalogue.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from components.cli.diagnostics import stack_values
from components.jetstream.errors import ConfigError
from components.migration.topology import bindings, phase_topology
from components.spec.stack import StackConfig, _default_durables, _default_streams, parse_stack_config, seeds_topology
from tests.harness import ROOT

URL = "nats://127.0.0.1:4222"
EXAMPLES = ROOT / "examples"


def example(name: str) -> dict[str, Any]:
    """The `topology` value of examples/topology-<name>.yaml, read as the CLI reads a stack file."""
    return stack_values(yaml.safe_load((EXAMPLES / f"topology-{name}.yaml").read_text()))["topology"]


def stack(phase: int, table: dict[str, Any] | None = None, **extra: Any) -> StackConfig:
    raw: dict[str, Any] = {"phase": phase, "natsUrl": URL, **extra}
    if table is not None:
        raw["topology"] = table
    return parse_stack_config(raw)


ORDERS = example("orders")


def test_example_seeds_file_declares_the_default_table() -> None:
    declared = stack(0, example("seeds"))

    assert declared.topology == seeds_topology(_default_streams(), _default_durables())[0]
    for phase in range(declared.table.last_phase + 1):
        assert phase_topology(stack(phase, example("seeds"))) == phase_topology(stack(phase)), f"phase {phase}"
        assert bindings(stack(phase, example("seeds"))) == bindings(stack(phase))
    assert declared.table.last_phase == stack(0).table.last_phase == 3


ORDERS_PHASES = [
    (0, {"ORDERS": ["orders.>"], "ORDERS_DLQ": ["dlq.orders.>"]}, {"fulfil-eu": "ORDERS", "fulfil-us": "ORDERS"}),
    (1, {"ORDERS": ["orders.us.>"], "ORDERS_EU": ["orders.eu.>"], "ORDERS_DLQ": ["dlq.orders.>"]},
     {"fulfil-eu": "ORDERS_EU", "fulfil-us": "ORDERS"}),
    (2, {"ORDERS": [], "ORDERS_EU": ["orders.eu.>"], "ORDERS_US": ["orders.us.>"], "ORDERS_DLQ": ["dlq.orders.>"]},
     {"fulfil-eu": "ORDERS_EU", "fulfil-us": "ORDERS_US"}),
]


@pytest.mark.parametrize(("phase", "streams", "homes"), ORDERS_PHASES, ids=[f"phase{p[0]}" for p in ORDERS_PHASES])
def test_phase_topology_orders_table_assigns_subjects_and_durables_per_phase(phase: int, streams: dict,
                                                                             homes: dict) -> None:
    topology = phase_topology(stack(phase, ORDERS, replicas=3))

    assert {s.name: list(s.subjects) for s in topology.streams} == streams
    assert {c.durable_name: c.stream for c in topology.consumers} == homes
    assert {s.name: (s.max_age, s.replicas, s.compression) for s in topology.streams} == {
        name: ({"ORDERS": "24h", "ORDERS_DLQ": "14d"}.get(name, "48h"), 3, "s2") for name in streams}
    assert {c.durable_name: (c.max_deliver, c.ack_wait, c.filter_subjects) for c in topology.consumers} == {
        "fulfil-eu": (5, "30s", ("orders.eu.*",)), "fulfil-us": (5, "30s", ("orders.us.*",))}


def test_bindings_orders_table_give_the_home_and_the_tables_candidates() -> None:
    assert bindings(stack(1, ORDERS)) == {
        "fulfil-eu": {"stream": "ORDERS_EU", "candidates": ["ORDERS_EU", "ORDERS"]},
        "fulfil-us": {"stream": "ORDERS", "candidates": ["ORDERS_US", "ORDERS"]},
    }


def test_bindings_table_without_candidates_defaults_to_homes_latest_phase_first() -> None:
    table = copy.deepcopy(ORDERS)
    del table["durables"]["fulfil-us"]["candidates"]

    assert bindings(stack(0, table))["fulfil-us"]["candidates"] == ["ORDERS_US", "ORDERS"]


def test_stream_own_field_wins_over_the_stack_wide_key() -> None:
    table = copy.deepcopy(ORDERS)
    table["streams"]["ORDERS_DLQ"]["replicas"] = 1
    table["streams"]["ORDERS_DLQ"]["retention"] = "workqueue"

    specs = {s.name: s for s in phase_topology(stack(0, table, replicas=3)).streams}

    assert (specs["ORDERS_DLQ"].replicas, specs["ORDERS_DLQ"].retention) == (1, "workqueue")
    assert (specs["ORDERS"].replicas, specs["ORDERS"].retention) == (3, "limits")


def test_dump_parses_back_to_the_same_table_and_the_seeds_dump_has_no_topology_key() -> None:
    # The phase gate stores the dump as its input and parses it back.
    for config in (stack(1, ORDERS, replicas=3), stack(2, rolloutHooks={"2": "true"})):
        dumped = config.model_dump(mode="json")
        again = StackConfig.model_validate(dumped)
        assert again.table == config.table
        assert phase_topology(again) == phase_topology(config)
    assert "topology" not in stack(2).model_dump(mode="json")
    assert "streams" not in stack(1, ORDERS).model_dump(mode="json")


def broken_orders(path: str, value: Any) -> dict[str, Any]:
    """The orders table with the value at `path` (dot-separated; digits are phase numbers) replaced, or deleted for "-"."""
    table = copy.deepcopy(ORDERS)
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = table
    for key in keys[:-1]:
        node = node[key]
    if value == "-":
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return table


#: (id, table change, other stack keys, the key named, a hint in the message): each rule broken once.
BAD_TABLES = [
    ("subject-two-owners", ("streams.ORDERS.phases.1", ["orders.>"]), {},
     "aa-event-bus:topology.streams.ORDERS_EU.phases.1", "a subject has one owner per phase"),
    ("filter-outside-home", ("durables.fulfil-eu.homes.1", "ORDERS"), {},
     "aa-event-bus:topology.durables.fulfil-eu.filterSubject", "matches no subject of stream ORDERS"),
    ("home-missing-in-a-phase", ("durables.fulfil-us.homes.2", "-"), {},
     "aa-event-bus:topology.durables.fulfil-us.homes", "no home stream in phase 2"),
    ("home-absent-in-its-phase", ("durables.fulfil-eu.homes.0", "ORDERS_EU"), {},
     "aa-event-bus:topology.durables.fulfil-eu.homes.0", "does not exist in phase 0"),
    ("home-unknown-stream", ("durables.fulfil-eu.homes.2", "ORDERS_ASIA"), {},
     "aa-event-bus:topology.durables.fulfil-eu.homes.2", "not a stream of the topology"),
    ("candidates-miss-a-home", ("durables.fulfil-eu.candidates", ["ORDERS_EU"]), {},
     "aa-event-bus:topology.durables.fulfil-eu.candidates", "misses ORDERS"),
    ("candidate-unknown-stream", ("durables.fulfil-eu.candidates", ["ORDERS_EU", "ORDERS", "OLD"]), {},
     "aa-event-bus:topology.durables.fulfil-eu.candidates", "'OLD' is not a stream"),
    ("stream-name", ("streams.ORDERS/ASIA", {"phases": {1: ["orders.asia.>"]}}), {},
     "aa-event-bus:topology.streams.ORDERS/ASIA", "contains whitespace or one of"),
    ("durable-name", ("durables.fulfil/eu", {"filterSubject": "orders.eu.>", "homes": {0: "ORDERS", 1: "ORDERS_EU",
                                                                                         2: "ORDERS_EU"}}), {},
     "aa-event-bus:topology.durables.fulfil/eu", "the consumer name"),
    ("phases-with-a-gap", ("phases.1", "-"), {}, "aa-event-bus:topology.phases", "without a gap; got 0, 2"),
    ("stream-phase-undeclared", ("streams.ORDERS_US.phases.5", ["orders.us.>"]), {},
     "aa-event-bus:topology.streams.ORDERS_US.phases.5", "not declared in the topology's phases"),
    ("stream-in-no-phase", ("streams.ORDERS_US.phases", {}), {},
     "aa-event-bus:topology.streams.ORDERS_US.phases", "exists in no phase"),
    ("subject-malformed", ("streams.ORDERS.phases.0", ["orders..x"]), {},
     "aa-event-bus:topology.streams.ORDERS.phases.0", "empty token"),
    ("stream-field", ("streams.ORDERS.maxMsgs", 0), {}, "aa-event-bus:topology.streams.ORDERS.maxMsgs", "use -1"),
    ("stream-field-type", ("streams.ORDERS.retention", "forever"), {},
     "aa-event-bus:topology.streams.ORDERS.retention", "'limits', 'interest' or 'workqueue'"),
    ("durable-field", ("durables.fulfil-eu.maxDeliver", 0), {},
     "aa-event-bus:topology.durables.fulfil-eu", "max_deliver must be -1"),
    ("typo-in-a-stream", ("streams.ORDERS.maxAgee", "1h"), {},
     "aa-event-bus:topology.streams.ORDERS.maxAgee", "did you mean topology.streams.ORDERS.maxAge?"),
    ("phase-beyond-the-table", None, {"phase": 3}, "aa-event-bus:phase", "less than or equal to 2 (phases 0 to 2)"),
    ("hook-beyond-the-table", None, {"rolloutHooks": {"3": "true"}}, "aa-event-bus:rolloutHooks", "phases 0 to 2"),
    ("window-longer-than-a-stream", None, {"duplicateWindow": "36h"}, "aa-event-bus:duplicateWindow",
     "topology.streams.ORDERS.maxAge 24h"),
    ("seeds-override-beside-a-table", None, {"streams": {"core": {"maxAge": "1h"}}}, "aa-event-bus:streams",
     "overrides the seeds' table only"),
]


@pytest.mark.parametrize(("change", "extra", "key", "hint"), [b[1:] for b in BAD_TABLES], ids=[b[0] for b in BAD_TABLES])
def test_parse_stack_config_bad_table_names_the_key(change: tuple[str, Any] | None, extra: dict, key: str,
                                                    hint: str) -> None:
    table = broken_orders(*change) if change else ORDERS
    raw = {"phase": 0, "natsUrl": URL, "topology": table, **extra}

    with pytest.raises(ConfigError) as bad:
        parse_stack_config(raw)

    assert bad.value.key == key, str(bad.value)
    assert hint in str(bad.value)


def test_parse_stack_config_orders_table_as_pulumi_hands_it_over_parses() -> None:
    # pulumi.Config gives a structured value as JSON text, its mapping keys as strings.
    import json

    assert stack(2, json.loads(json.dumps(ORDERS))).table == stack(2, ORDERS).table


@pytest.mark.parametrize("command", [["plan", "3"], ["migration", "verify", "3"]])
def test_cli_phase_beyond_the_table_exits_2_naming_the_phases(tmp_path: Path, command: list[str]) -> None:
    from components.cli.main import main

    stack_file = tmp_path / "Pulumi.orders.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {"aa-event-bus:natsUrl": "nats://127.0.0.1:1",
                                                     "aa-event-bus:topology": ORDERS}}))

    result = CliRunner().invoke(main, ["--stack-config", str(stack_file), *command])

    assert result.exit_code == 2, result.output
    assert "3 is not a phase of the stack's topology (phases 0 to 2)" in result.output
