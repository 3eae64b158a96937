"""Pulumi's floor: `count` pairs of no-op dynamic resources, no NATS, no project code.

The same number of resources and the same dependency shape (each "consumer"
depends on its "stream") as benchmarks/scale_program, so the difference between
the two is this project's own cost on top of the engine, the SDK and the
dynamic-provider plugin.
"""

import pulumi
import pulumi.dynamic as dyn
import pulumi.dynamic.dynamic as sdk_dynamic

# Each call of the SDK's serialize_provider (v3.259) leaves pickle._Pickler._batch_setitems
# wrapped once more, so the N-th provider pickled by value recurses N deep: past about 300
# resources `pulumi up` dies with RecursionError. Noop is stateless, so one serialization
# serves every resource (this project's providers pickle by reference, 84 bytes, and never
# reach that path).
_serialize = sdk_dynamic.serialize_provider
_serialized: dict[type, str] = {}


def _serialize_once(provider):
    kind = type(provider)
    if kind not in _serialized:
        _serialized[kind] = _serialize(provider)
    return _serialized[kind]


sdk_dynamic.serialize_provider = _serialize_once


class Noop(dyn.ResourceProvider):
    def create(self, props):
        return dyn.CreateResult(props["name"], props)

    def diff(self, _id, olds, news):
        return dyn.DiffResult(changes=olds.get("name") != news.get("name"))

    def read(self, id_, props):
        return dyn.ReadResult(id_, props)


class Thing(dyn.Resource):
    def __init__(self, name, props, opts=None):
        super().__init__(Noop(), name, props, opts)


count = pulumi.Config().require_int("count")
for i in range(count):
    name = f"BENCH_{i:04d}"
    stream = Thing(name, {"name": name, "subjects": [f"bench.{i}.>"], "max_age": "48h"})
    Thing(f"{name}/worker", {"name": f"{name}/worker", "filter": f"bench.{i}.>"},
          pulumi.ResourceOptions(depends_on=[stream]))
pulumi.export("count", count)
