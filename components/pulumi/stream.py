"""The stream resource and its Pulumi dynamic provider."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
import pulumi.dynamic as dyn

from components.migration import policy
from components.migration.lock import STREAM_WRITE_LOCK
from components.pulumi import base
from components.pulumi.inputs import STREAM_INPUTS
from components.pulumi.snapshot import SNAPSHOT

if TYPE_CHECKING:  # the client and the hand-over load only when a call talks to the server, the spec when one parses
    from components.jetstream.client import JetStream
    from components.jetstream.settings import ConnectionSettings
    from components.spec.stream import StreamSpec


class StreamProvider(base.SpecProvider["StreamSpec"]):
    """Create, read, update and delete one JetStream stream. Stateless: pickled by reference.

    Every write runs under the provider process's stream write lock and goes through
    the hand-over (`components.migration.handover.apply_stream`), which moves subjects
    from the `takeover` streams that hold them.
    """

    kind = "stream"
    inputs = STREAM_INPUTS
    loses = "its messages"
    write_lock = STREAM_WRITE_LOCK

    def spec_type(self) -> type[StreamSpec]:
        from components.spec.stream import StreamSpec

        return StreamSpec

    def object_id(self, spec: StreamSpec) -> str:
        return spec.name

    def replace_reasons(self, old: StreamSpec, new: StreamSpec) -> dict[str, str]:
        from components.spec.stream import replace_reasons

        return replace_reasons(old, new)

    def fetch(self, js: JetStream, id_: str) -> dict | None:
        return js.stream_info(id_)

    def fetch_for_read(self, js: JetStream, id_: str) -> dict | None:
        return SNAPSHOT.stream_info(js, id_)

    def spec_of(self, id_: str, info: dict) -> StreamSpec:
        return self.spec_type().from_wire(info["config"])

    def apply(self, js: JetStream, spec: StreamSpec, info: dict | None, props: dict[str, Any]) -> dict:
        from components.migration.handover import apply_stream

        return apply_stream(js, spec, info, self.inputs.value(props, "takeover"),
                            self.inputs.value(props, "claim_retry_timeout"), self.inputs.value(props, "keeps"))

    def remove(self, js: JetStream, id_: str, props: dict[str, Any], opted: bool) -> None:
        js.stream_delete(id_)

    def failures(self, olds: dict[str, Any], inputs: dict[str, Any]) -> list[dyn.CheckFailure]:
        if inputs.get("sealed") and not olds:
            return [dyn.CheckFailure("sealed", "a stream cannot be created sealed; seal it in a later update")]
        return []

    def guard_in_place(self, old: StreamSpec, new: StreamSpec, fields: list[str], news: dict[str, Any],
                       opted: bool) -> None:
        if policy.TRIMMING_FIELDS.intersection(fields):
            policy.guard_limits(base.jetstream(news), old, new, opted)

    def forced_changes(self, news: dict[str, Any]) -> list[str]:
        reclaim = news.get("reclaim")
        # The server lost subjects the state still lists: claim them again.
        return ["reclaim"] if reclaim and not base.unknown(reclaim) else []


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
        claim_retry_timeout: float = STREAM_INPUTS["claim_retry_timeout"].default,
        reclaim: list[str] | None = None,
        keeps: dict[str, list[str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = base.register(spec.props(), STREAM_INPUTS, {
            **base.connection_values(connection),
            "allow_data_loss": allow_data_loss,
            "takeover": sorted(set(takeover or []) - {spec.name}),
            "claim_retry_timeout": claim_retry_timeout,
            "reclaim": sorted(reclaim or []),
            "keeps": {owner: sorted(subjects) for owner, subjects in sorted((keeps or {}).items())},
        }, opts)
        super().__init__(StreamProvider(), resource_name, props, opts)
