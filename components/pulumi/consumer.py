"""The durable consumer resource and its Pulumi dynamic provider."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic as dyn
from pydantic import ValidationError

from components.jetstream.client import ConnectionSettings
from components.jetstream.errors import EventBusError, StreamNotFound
from components.migration.handover import record_drained, wait_for_drain
from components.migration.policy import guard_consumer_loss
from components.pulumi import base as rc
from components.spec.consumer import ConsumerSpec, replace_reasons
from components.spec.stream import changed_fields
from components.spec.subjects import subjects_overlap

#: How long delete() waits for a consumer's pending messages to drain, seconds.
DRAIN_TIMEOUT = "drain_timeout"

#: The desired subjects of the consumer's stream, so check() can catch a filter that
#: no subject of the stream covers before anything reaches the server.
STREAM_SUBJECTS = "stream_subjects"


def _parse(props: dict[str, Any]) -> ConsumerSpec:
    fields = ConsumerSpec.model_fields
    return ConsumerSpec.model_validate({k: v for k, v in props.items() if k in fields})


def _outputs(props: dict[str, Any], spec: ConsumerSpec) -> dict[str, Any]:
    """The state after a call: the server's view of the consumer plus the non-spec inputs."""
    return {
        **spec.props(full=True),
        "consumer_id": spec.id,
        STREAM_SUBJECTS: list(props.get(STREAM_SUBJECTS) or []),
        rc.SERVERS: props[rc.SERVERS],
        rc.CREDENTIALS: props.get(rc.CREDENTIALS) or {},
        rc.ALLOW_DATA_LOSS: bool(props.get(rc.ALLOW_DATA_LOSS)),
        DRAIN_TIMEOUT: float(props.get(DRAIN_TIMEOUT) or 0),
    }


class ConsumerProvider(rc.OptInAware, dyn.ResourceProvider):
    """Create, read, update and delete one durable consumer. Stateless: pickled by reference."""

    serialize_as_secret_always = False

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        try:
            spec = _parse(news)
        except ValidationError as exc:
            return dyn.CheckResult(news, [dyn.CheckFailure(f, m) for f, m in rc.validation_messages(exc)])
        failures = []
        stream_subjects = news.get(STREAM_SUBJECTS) or []
        if stream_subjects and not rc.unknown(stream_subjects):
            for f in spec.filter_subjects:
                if not any(subjects_overlap(f, s) for s in stream_subjects):
                    failures.append(dyn.CheckFailure(
                        "filter_subjects",
                        f"filter {f!r} matches no subject of stream {spec.stream} ({', '.join(stream_subjects)}); "
                        "fix the filter or the stream's subjects",
                    ))
        inputs = {**news, **spec.props()}
        inputs.pop(rc.ADOPTION, None)
        if not olds and not failures:
            self._note_adoption(spec, inputs)
        return dyn.CheckResult(inputs, failures)

    def _note_adoption(self, spec: ConsumerSpec, inputs: dict[str, Any]) -> None:
        """On create, say in the preview whether an existing consumer will be adopted."""
        try:
            info = rc.jetstream(inputs).consumer_info(spec.stream, spec.durable_name)
        except EventBusError:
            return
        if info is None:
            return
        existing = ConsumerSpec.from_wire(spec.stream, info["config"])
        fixed = replace_reasons(existing, spec)
        changed = [] if fixed else changed_fields(existing, spec)
        inputs[rc.ADOPTION] = rc.adoption_note(f"consumer {spec.id}", fixed, changed)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        old, new = _parse(olds), _parse(news)
        fields = changed_fields(old, new)
        fields += rc.changed_inputs(olds, news, (rc.SERVERS, rc.CREDENTIALS, rc.ALLOW_DATA_LOSS, DRAIN_TIMEOUT))
        if not fields:
            return dyn.DiffResult(changes=False, replaces=[], delete_before_replace=True)
        reasons = replace_reasons(old, new)
        if reasons and old.stream == new.stream:
            guard_consumer_loss(rc.jetstream(news), old.id, bool(news.get(rc.ALLOW_DATA_LOSS)), "replacing it", sorted(reasons))
        return dyn.DiffResult(changes=True, replaces=sorted(reasons), delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        spec = _parse(props)
        js = rc.jetstream(props)
        info = js.consumer_info(spec.stream, spec.durable_name)
        if info is None:
            if js.stream_info(spec.stream) is None:
                raise StreamNotFound(f"stream {spec.stream} does not exist", err_code=10059,
                                     stream=spec.stream, consumer=spec.durable_name,
                                     hint="Create the stream first (declare it in the same stack)")
            info = js.consumer_upsert(spec.stream, spec.wire(), "create")
        else:
            existing = ConsumerSpec.from_wire(spec.stream, info["config"])
            fixed = replace_reasons(existing, spec)
            if fixed:
                raise EventBusError(
                    f"consumer {spec.id} already exists with a different {', '.join(fixed)}: "
                    f"{'; '.join(fixed.values())}. Delete it (losing its position) or match its config"
                )
            if changed_fields(existing, spec):
                info = js.consumer_upsert(spec.stream, spec.wire(), "update")
        return dyn.CreateResult(spec.id, _outputs(props, ConsumerSpec.from_wire(spec.stream, info["config"])))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        spec = _parse(news)
        js = rc.jetstream(news)
        action = "update" if js.consumer_info(spec.stream, spec.durable_name) else "create"
        info = js.consumer_upsert(spec.stream, spec.wire(), action)
        return dyn.UpdateResult(_outputs(news, ConsumerSpec.from_wire(spec.stream, info["config"])))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        stream, durable = id_.split("/", 1)
        js = rc.jetstream(props)
        info = js.consumer_info(stream, durable)
        if info is None:
            return dyn.ReadResult("", {})
        spec = ConsumerSpec.from_wire(stream, info["config"])
        outs = _outputs(props, spec)
        return dyn.ReadResult(id_, outs, rc.input_view(outs, spec.props()))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        js = rc.jetstream(props)
        stream, durable = id_.split("/", 1)
        allowed = self.allowed(props, id_)
        if not allowed:
            wait_for_drain(js, stream, durable, float(props.get(DRAIN_TIMEOUT) or 0))
        guard_consumer_loss(js, id_, allowed, "deleting it")
        record_drained(js, stream, js.consumer_info(stream, durable))
        js.consumer_delete(stream, durable)


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
        drain_timeout: float = 30.0,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        servers, creds = rc.connection_inputs(connection)
        props: dict[str, Any] = {
            **spec.props(),
            STREAM_SUBJECTS: list(stream_subjects or []),
            rc.SERVERS: servers,
            rc.CREDENTIALS: pulumi.Output.secret(creds) if creds else {},
            rc.ALLOW_DATA_LOSS: allow_data_loss,
            DRAIN_TIMEOUT: drain_timeout,
            "consumer_id": None,
        }
        super().__init__(ConsumerProvider(), resource_name, props, opts)


__all__ = ["Consumer", "ConsumerProvider"]
