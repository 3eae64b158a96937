"""N streams with one durable consumer each (config `count`), on `natsUrl`."""

import pulumi

from components.jetstream.settings import ConnectionSettings
from components.pulumi.consumer import Consumer
from components.pulumi.stream import Stream
from components.spec.consumer import ConsumerSpec
from components.spec.stream import StreamSpec

config = pulumi.Config()
count = config.require_int("count")
connection = ConnectionSettings(servers=config.require("natsUrl"))

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
