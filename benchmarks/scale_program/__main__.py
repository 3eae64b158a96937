"""N streams with one durable consumer each (config `count`), on `natsUrl`."""

import pulumi

from components.consumer import Consumer, ConsumerSpec
from components.nats_client import ConnectionSettings
from components.stream import Stream, StreamSpec

config = pulumi.Config()
count = config.require_int("count")
connection = ConnectionSettings.model_validate({"servers": config.require("natsUrl")})

for i in range(count):
    name = f"BENCH_{i:04d}"
    stream = Stream(name, StreamSpec(name=name, subjects=[f"bench.{i}.>"], max_age="48h", compression="s2"), connection)
    Consumer(
        f"{name}/worker",
        ConsumerSpec(stream=name, durable_name="worker", filter_subjects=[f"bench.{i}.>"], ack_wait="60s", max_deliver=5),
        connection,
        stream_subjects=[f"bench.{i}.>"],
        opts=pulumi.ResourceOptions(depends_on=[stream]),
    )
pulumi.export("count", count)
