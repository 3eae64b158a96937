"""The durable consumer resource and its Pulumi dynamic provider."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
import pulumi.dynamic as dyn

from components.jetstream.errors import StreamNotFound
from components.pulumi import base
from components.pulumi.inputs import CONSUMER_INPUTS
from components.pulumi.snapshot import SNAPSHOT
from components.spec.subjects import subjects_overlap

if TYPE_CHECKING:  # the client and the hand-over load only when a call talks to the server, the spec when one parses
    from components.jetstream.client import JetStream
    from components.jetstream.settings import ConnectionSettings
    from components.spec.consumer import ConsumerSpec


class ConsumerProvider(base.SpecProvider["ConsumerSpec"]):
    """Create, read, update and delete one durable consumer. Stateless: pickled by reference.

    A delete without the opt-in first waits up to `drain_timeout` for the durable's
    pending messages to drain, and records on its stream how far it got.
    """

    kind = "consumer"
    inputs = CONSUMER_INPUTS
    loses = "its position"

    def spec_type(self) -> type[ConsumerSpec]:
        from components.spec.consumer import ConsumerSpec

        return ConsumerSpec

    def object_id(self, spec: ConsumerSpec) -> str:
        return spec.id

    def replace_reasons(self, old: ConsumerSpec, new: ConsumerSpec) -> dict[str, str]:
        from components.spec.consumer import replace_reasons

        return replace_reasons(old, new)

    def fetch(self, js: JetStream, id_: str) -> dict | None:
        stream, durable = id_.split("/", 1)
        return js.consumer_info(stream, durable)

    def fetch_for_read(self, js: JetStream, id_: str) -> dict | None:
        stream, durable = id_.split("/", 1)
        return SNAPSHOT.consumer_info(js, stream, durable)

    def spec_of(self, id_: str, info: dict) -> ConsumerSpec:
        return self.spec_type().from_wire(id_.split("/", 1)[0], info["config"])

    def apply(self, js: JetStream, spec: ConsumerSpec, info: dict | None, props: dict[str, Any]) -> dict:
        if info is None:
            if js.stream_info(spec.stream) is None:
                raise StreamNotFound(f"stream {spec.stream} does not exist", err_code=10059,
                                     stream=spec.stream, consumer=spec.durable_name,
                                     hint="Create the stream first (declare it in the same stack)")
            return js.consumer_upsert(spec.stream, spec.wire(), "create")
        from components.spec.fields import changed_fields

        if changed_fields(self.spec_of(spec.id, info), spec):
            info = js.consumer_upsert(spec.stream, spec.wire(), "update")
            if self.spec_of(spec.id, info).pause_until != spec.pause_until:  # kept by the update
                js.consumer_pause(spec.stream, spec.durable_name, spec.pause_until)
                info = js.consumer_info(spec.stream, spec.durable_name) or info
        return info

    def before_delete(self, js: JetStream, id_: str, props: dict[str, Any], opted: bool) -> None:
        if not opted:
            stream, durable = id_.split("/", 1)
            from components.migration.handover import wait_for_drain

            wait_for_drain(js, stream, durable, self.inputs.value(props, "drain_timeout"))

    def remove(self, js: JetStream, id_: str, props: dict[str, Any], opted: bool) -> None:
        stream, durable = id_.split("/", 1)
        from components.migration.handover import record_drained

        record_drained(js, stream, js.consumer_info(stream, durable))
        js.consumer_delete(stream, durable)

    def failures(self, olds: dict[str, Any], inputs: dict[str, Any]) -> list[dyn.CheckFailure]:
        """A filter no desired subject of the consumer's stream covers fails before anything reaches the server."""
        stream_subjects = inputs.get("stream_subjects") or []
        if not stream_subjects or base.unknown(stream_subjects):
            return []
        return [
            dyn.CheckFailure(
                "filter_subjects",
                f"filter {f!r} matches no subject of stream {inputs['stream']} ({', '.join(stream_subjects)}); "
                "fix the filter or the stream's subjects",
            )
            for f in inputs.get("filter_subjects") or ()
            if not any(subjects_overlap(f, s) for s in stream_subjects)
        ]


class Consumer(dyn.Resource, module="jetstream", name="Consumer"):
    """A durable JetStream consumer managed by Pulumi."""

    consumer_id: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        spec: ConsumerSpec,
        connection: ConnectionSettings,
        *,
        stream_subjects: list[str] | None = None,
        allow_data_loss: bool = False,
        drain_timeout: float = CONSUMER_INPUTS["drain_timeout"].default,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = base.register(spec.props(), CONSUMER_INPUTS, {
            "stream_subjects": list(stream_subjects or []),
            **base.connection_values(connection),
            "allow_data_loss": allow_data_loss,
            "drain_timeout": drain_timeout,
        }, opts)
        super().__init__(ConsumerProvider(), resource_name, props, opts)


__all__ = ["Consumer", "ConsumerProvider"]
