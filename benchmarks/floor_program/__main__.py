"""Pulumi's floor: `count` pairs of no-op dynamic resources, no NATS, no project code.

The same number of resources and the same dependency shape (each "consumer"
depends on its "stream") as benchmarks/scale_program, so the difference between
the two is this project's own cost on top of the engine, the SDK and the
dynamic-provider plugin.
"""

import pulumi
import pulumi.dynamic as dyn


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
