"""The Pulumi program: read the stack config, declare the phase's topology, export the bindings."""

import pulumi

from components.pulumi import lifeline
from components.pulumi.config import load_pulumi_config
from components.pulumi.eventbus import EventBus

lifeline.start_in_program()  # exit with the engine, and quietly on its cancel, on either language host

config, connection = load_pulumi_config()
bus = EventBus("event-bus", config, connection)

pulumi.export("phase", config.phase)
pulumi.export("streams", bus.stream_subjects)
pulumi.export("bindings", bus.bindings)
pulumi.export("emptyStreams", bus.empty_streams)
