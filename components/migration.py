"""The event-bus component: the phase's streams, durables and phase gate, as Pulumi resources."""

from __future__ import annotations

import pulumi

from components.config import StackConfig
from components.consumer import Consumer
from components.durations import ns
from components.errors import EventBusError
from components.gate import PhaseGate
from components.nats_client import ConnectionSettings, JetStream
from components.stream import Stream
from components.topology import LiveConsumer, LiveStream, LiveView, bindings, phase_topology, plan
from components.verify import stored_subjects

#: The info diagnostic naming the managed streams that held no messages at preview time
#: (preview JSON carries diagnostics but no stack outputs; the preview report reads this).
EMPTY_STREAMS_NOTE = "empty streams on the server: "

#: A durable's fields that are fixed when it is created from the live state (its start
#: position); later runs keep what was chosen then.
START_FIELDS = ["deliver_policy", "opt_start_seq"]


def read_live(connection: ConnectionSettings, names: list[str]) -> LiveView:
    """What the server holds now for the managed streams (raises EventBusError if unreachable)."""
    js = JetStream(connection.model_copy(update={"connect_timeout": 3.0}))
    live: LiveView = {}
    for name in names:
        info = js.stream_info(name)
        if info is None:
            continue
        consumers = {
            c["name"]: LiveConsumer(int(c.get("num_pending", 0)), int(c.get("num_ack_pending", 0)))
            for c in js.consumer_infos(name)
        }
        live[name] = LiveStream(
            name=name,
            subjects=tuple(stored_subjects(info["config"])),
            messages=int(info["state"]["messages"]),
            last_seq=int(info["state"]["last_seq"]),
            consumers=consumers,
        )
    return live


class EventBus(pulumi.ComponentResource):
    """All streams and durable consumers of one phase, in an order that never overlaps subjects."""

    def __init__(self, name: str, stack: StackConfig, connection: ConnectionSettings,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("aa:eventbus:EventBus", name, None, opts)
        topology = phase_topology(stack)
        try:
            live: LiveView | None = read_live(connection, stack.managed_names())
        except EventBusError as exc:
            live = None
            pulumi.log.warn(f"live state not read, so nothing is checked against the server at this step: {exc}", self)
        decided = plan(topology, stack, live)
        for warning in decided.warnings:
            pulumi.log.warn(warning, self)

        managed = stack.managed_names()
        allowed = set(stack.allow_data_loss)
        streams: dict[str, Stream] = {}
        for spec in decided.ordered_streams():
            streams[spec.name] = Stream(
                spec.name,
                spec,
                connection,
                allow_data_loss=spec.name in allowed,
                takeover=managed,
                claim_retry_timeout=ns(stack.claim_retry_timeout) / 1e9,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[streams[d] for d in decided.after.get(spec.name, ()) if d in streams],
                ),
            )

        consumers = []
        planned = {c.id for c in topology.consumers}
        for cspec in decided.consumers:
            stream_spec = next(s for s in decided.streams if s.name == cspec.stream)
            # A durable kept to drain may sit on a stream that no longer owns its filter.
            stream_subjects = list(stream_spec.subjects) if cspec.id in planned else []
            consumers.append(Consumer(
                cspec.id,
                cspec,
                connection,
                stream_subjects=stream_subjects,
                allow_data_loss=cspec.id in allowed,
                drain_timeout=ns(stack.drain_timeout) / 1e9,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[streams[cspec.stream]], ignore_changes=START_FIELDS),
            ))

        PhaseGate(
            f"phase-gate-{name}",
            stack,
            connection,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*streams.values(), *consumers]),
        )

        self.stream_subjects = {s.name: list(s.subjects) for s in decided.streams}
        self.bindings = bindings(stack)
        #: Managed streams the server held no messages in when this program ran: removing
        #: one of these loses nothing (the preview report uses it to judge deletions).
        self.empty_streams = sorted(n for n, s in (live or {}).items() if s.messages == 0)
        if live is not None:
            pulumi.log.info(EMPTY_STREAMS_NOTE + (", ".join(self.empty_streams) or "none"), self)
        self.register_outputs({"streams": self.stream_subjects, "bindings": self.bindings})
