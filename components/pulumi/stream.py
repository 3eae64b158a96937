"""The stream resource and its Pulumi dynamic provider."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic as dyn
from pydantic import ValidationError

from components.jetstream.client import ConnectionSettings
from components.jetstream.errors import EventBusError
from components.migration.handover import STREAM_WRITE_LOCK, apply_stream
from components.migration.policy import guard_data_loss
from components.pulumi import base as rc
from components.pulumi import lifeline
from components.spec.stream import StreamSpec, changed_fields, replace_reasons

lifeline.start_if_plugin()  # in the dynamic-provider process: exit when the engine is gone

#: Streams this stream may take subjects from when it claims them (see `hand_over`).
TAKEOVER = "takeover"
#: Input: seconds the provider keeps retrying a claim (then the give-back) across reconnects.
CLAIM_RETRY_TIMEOUT = "claim_retry_timeout"
DEFAULT_CLAIM_RETRY_TIMEOUT = 30.0
#: Input: subjects the stream must claim now although its state says it has them.
RECLAIM = "reclaim"


# -- the provider -------------------------------------------------------------------------
def _parse(props: dict[str, Any]) -> StreamSpec:
    fields = StreamSpec.model_fields
    return StreamSpec.model_validate({k: v for k, v in props.items() if k in fields})


def _outputs(props: dict[str, Any], spec: StreamSpec) -> dict[str, Any]:
    """The state after a call: the server's view of the stream plus the non-spec inputs."""
    return {
        **spec.props(full=True),
        "stream_name": spec.name,
        rc.SERVERS: props[rc.SERVERS],
        rc.CREDENTIALS: props.get(rc.CREDENTIALS) or {},
        rc.ALLOW_DATA_LOSS: bool(props.get(rc.ALLOW_DATA_LOSS)),
        TAKEOVER: list(props.get(TAKEOVER) or []),
        CLAIM_RETRY_TIMEOUT: _retry_timeout(props),
    }


def _retry_timeout(props: dict[str, Any]) -> float:
    value = props.get(CLAIM_RETRY_TIMEOUT)
    return DEFAULT_CLAIM_RETRY_TIMEOUT if value is None else float(value)


class StreamProvider(rc.OptInAware, dyn.ResourceProvider):
    """Create, read, update and delete one JetStream stream. Stateless: pickled by reference."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        try:
            spec = _parse(news)
        except ValidationError as exc:
            return dyn.CheckResult(news, [dyn.CheckFailure(f, m) for f, m in rc.validation_messages(exc)])
        if spec.sealed and not _olds:
            return dyn.CheckResult(news, [dyn.CheckFailure("sealed", "a stream cannot be created sealed; seal it in a later update")])
        inputs = {**news, **spec.props()}
        inputs.pop(rc.ADOPTION, None)
        if not _olds:
            self._note_adoption(spec, inputs)
        return dyn.CheckResult(inputs, [])

    def _note_adoption(self, spec: StreamSpec, inputs: dict[str, Any]) -> None:
        """On create, say in the preview whether an existing stream will be adopted."""
        try:
            js = rc.jetstream(inputs)
            info = js.stream_info(spec.name)
        except EventBusError:
            return  # the server is checked again at create time
        if info is None:
            return
        existing = StreamSpec.from_wire(info["config"])
        fixed = replace_reasons(existing, spec)
        changed = [] if fixed else changed_fields(existing, spec)
        inputs[rc.ADOPTION] = rc.adoption_note(f"stream {spec.name}", fixed, changed)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        old, new = _parse(olds), _parse(news)
        fields = changed_fields(old, new)
        fields += rc.changed_inputs(olds, news, (rc.SERVERS, rc.CREDENTIALS, rc.ALLOW_DATA_LOSS, TAKEOVER))
        if news.get(RECLAIM) and not rc.unknown(news.get(RECLAIM)):
            fields.append(RECLAIM)  # the server lost subjects the state still lists: claim them again
        if not fields:
            return dyn.DiffResult(changes=False, replaces=[], delete_before_replace=True)
        reasons = replace_reasons(old, new)
        if reasons:
            # Refuse at preview time, not half-way through an apply.
            guard_data_loss(rc.jetstream(news), new.name, bool(news.get(rc.ALLOW_DATA_LOSS)), "replacing it", sorted(reasons))
        return dyn.DiffResult(changes=True, replaces=sorted(reasons), delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        spec = _parse(props)
        js = rc.jetstream(props)
        with STREAM_WRITE_LOCK:
            info = js.stream_info(spec.name)
            if info is not None:
                existing = StreamSpec.from_wire(info["config"])
                fixed = replace_reasons(existing, spec)
                if fixed:
                    raise EventBusError(
                        f"stream {spec.name} already exists with a different {', '.join(fixed)}: "
                        f"{'; '.join(fixed.values())}. Delete it (losing its messages) or match its config"
                    )
            info = apply_stream(js, spec, info, list(props.get(TAKEOVER) or []), _retry_timeout(props))
        return dyn.CreateResult(spec.name, _outputs(props, StreamSpec.from_wire(info["config"])))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        spec = _parse(news)
        js = rc.jetstream(news)
        with STREAM_WRITE_LOCK:
            # Created again if it was deleted out of band since the last refresh.
            info = apply_stream(js, spec, js.stream_info(spec.name), list(news.get(TAKEOVER) or []),
                                _retry_timeout(news))
        return dyn.UpdateResult(_outputs(news, StreamSpec.from_wire(info["config"])))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        js = rc.jetstream(props)
        info = js.stream_info(id_)
        if info is None:
            return dyn.ReadResult("", {})  # gone: Pulumi drops it and the next up recreates it
        spec = StreamSpec.from_wire(info["config"])
        outs = _outputs(props, spec)
        return dyn.ReadResult(id_, outs, rc.input_view(outs, spec.props()))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        js = rc.jetstream(props)
        guard_data_loss(js, id_, self.allowed(props, id_), "deleting it")
        js.stream_delete(id_)


class Stream(dyn.Resource, module="jetstream", name="Stream"):
    """A JetStream stream managed by Pulumi."""

    stream_name: pulumi.Output[str]
    subjects: pulumi.Output[list[str]]

    def __init__(
        self,
        resource_name: str,
        spec: StreamSpec,
        connection: ConnectionSettings,
        *,
        allow_data_loss: bool = False,
        takeover: list[str] | None = None,
        claim_retry_timeout: float = DEFAULT_CLAIM_RETRY_TIMEOUT,
        reclaim: list[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        servers, creds = rc.connection_inputs(connection)
        props: dict[str, Any] = {
            **spec.props(),
            rc.SERVERS: servers,
            rc.CREDENTIALS: pulumi.Output.secret(creds) if creds else {},
            rc.ALLOW_DATA_LOSS: allow_data_loss,
            TAKEOVER: sorted(set(takeover or []) - {spec.name}),
            CLAIM_RETRY_TIMEOUT: claim_retry_timeout,
            RECLAIM: sorted(reclaim or []),
            "stream_name": None,
        }
        super().__init__(StreamProvider(), resource_name, props, opts)
