"""The event-bus component: the phase's streams, durables and phase gate, as Pulumi resources."""

from __future__ import annotations

import dataclasses
import uuid

import pulumi

from components.jetstream.client import ConnectionSettings, JetStream, connect_quickly
from components.jetstream.errors import EventBusError
from components.jetstream.live import LiveConsumer, LiveStream, LiveView
from components.migration import preflight
from components.migration.topology import (
    DRAINED_DURABLES_NOTE,
    EMPTY_STREAMS_NOTE,
    Plan,
    Topology,
    bindings,
    phase_topology,
    plan,
)
from components.migration.verify import ownership
from components.pulumi.consumer import Consumer
from components.pulumi.gate import PhaseGate
from components.pulumi.stream import Stream
from components.spec.durations import ns
from components.spec.stack import StackConfig
from components.spec.subjects import subjects_overlap

#: A durable's fields that are fixed when it is created from the live state (its start
#: position); later runs keep what was chosen then.
START_FIELDS = ["deliver_policy", "opt_start_seq"]


def read_live(connection: ConnectionSettings, names: list[str]) -> LiveView:
    """What the server holds now for the managed streams (raises EventBusError if unreachable)."""
    js = connect_quickly(connection)
    live: LiveView = {}
    for name in names:
        info = js.stream_info(name)
        if info is not None:
            live[name] = LiveStream.from_info(info, js.consumer_infos(name))
    return live


def _preflight(connection: ConnectionSettings, stack: StackConfig, decided: Plan, live: LiveView) -> None:
    """Fail the program, naming the stack keys, when the server would refuse the plan (preflight)."""
    per_stream: dict[str, int] = {}
    for c in decided.consumers:
        per_stream[c.stream] = per_stream.get(c.stream, 0) + 1
    try:
        preflight.check_server(connection, stack, decided.streams, per_stream, live)
    except EventBusError as exc:
        raise pulumi.RunError(str(exc)) from None


def read_ownership(connection: ConnectionSettings, topology: Topology) -> dict[str, tuple[str, ...]]:
    """subject -> the streams the server says own it, for every subject of `topology`."""
    return ownership(connect_quickly(connection), (subject for s in topology.streams for subject in s.subjects))


def read_stranded(connection: ConnectionSettings, stack: StackConfig, live: LiveView) -> LiveView:
    """`live` with, per stream, the messages under each durable's filter that no durable there will deliver.

    Those are the messages stored after the tool released the subject from the stream
    (and after what a durable for them last acknowledged before it was removed) while
    the stream has no such durable. Found with STREAM.MSG.GET next_by_subj; counted
    with a short-lived in-memory consumer that is deleted right away.
    """
    js = connect_quickly(connection)
    out: LiveView = {}
    for name, stream in live.items():
        found: dict[str, tuple[int, int]] = {}
        for durable in (d for d in stack.table.durables if d.durable not in stream.consumers):
            marks = [seq for subject, seq in stream.released.items() if subjects_overlap(subject, durable.filter_subject)]
            if not marks:
                continue
            start = max([*marks, stream.drained.get(durable.durable, 0)]) + 1
            msg = js.msg_get(name, start, next_by_subj=durable.filter_subject)
            if msg is None:
                continue
            first = int(msg["seq"])
            found[durable.durable] = (first, _count(js, name, durable.filter_subject, first))
        out[name] = dataclasses.replace(stream, stranded=found) if found else stream
    return out


def _count(js: JetStream, stream: str, subject: str, first: int) -> int:
    """Messages under `subject` in `stream` from seq `first` on (an ephemeral consumer's num_pending)."""
    name = f"eventbus-count-{uuid.uuid4().hex[:12]}"
    config = {"name": name, "deliver_policy": "by_start_sequence", "opt_start_seq": first, "filter_subject": subject,
              "ack_policy": "none", "mem_storage": True, "num_replicas": 1, "inactive_threshold": 10 * 10**9}
    info = js.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": config},
                      stream=stream)
    js.consumer_delete(stream, name)
    return LiveConsumer.from_info(info).pending


class EventBus(pulumi.ComponentResource):
    """All streams and durable consumers of one phase, in an order that never overlaps subjects."""

    def __init__(self, name: str, stack: StackConfig, connection: ConnectionSettings,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("aa:eventbus:EventBus", name, None, opts)
        topology = phase_topology(stack)
        try:
            live: LiveView | None = read_live(connection, stack.managed_names())
        except EventBusError as exc:
            # Without the live read the plan would delete durables with a backlog and lose the
            # hand-over order: fail, unless the operator asked for a preview without a server.
            if not (pulumi.runtime.is_dry_run() and preflight.offline_preview_requested()):
                raise pulumi.RunError(
                    f"cannot read the live server, so this deploy cannot be checked: {exc}. For a preview "
                    f"without a server, set {preflight.OFFLINE_ENV}=1 (nothing is then checked against it)"
                ) from None
            live = None
            pulumi.log.warn(f"{preflight.OFFLINE_NOTE} ({preflight.OFFLINE_ENV} is set; {exc})", self)
        owners = None
        if live is not None:
            try:
                owners = read_ownership(connection, topology)
                live = read_stranded(connection, stack, live)
            except EventBusError as exc:
                raise pulumi.RunError(f"cannot read subject ownership on the live server, so this deploy cannot be "
                                      f"checked: {exc}") from None
        try:
            decided = plan(topology, stack, live, owners)
        except EventBusError as exc:  # a subject held by a stream this stack does not manage
            raise pulumi.RunError(str(exc)) from None
        if live is not None:
            _preflight(connection, stack, decided, live)
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
                reclaim=list(decided.reclaim.get(spec.name, ())),
                keeps={owner: list(kept) for owner, kept in decided.keeps.get(spec.name, {}).items()},
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
        #: Their durables with nothing pending or unacknowledged ("STREAM/durable"), likewise: those
        #: the plan does not keep to drain.
        self.drained_durables = sorted(f"{n}/{c}" for n, s in (live or {}).items() for c, d in s.consumers.items()
                                       if not d.unprocessed)
        if live is not None:
            pulumi.log.info(EMPTY_STREAMS_NOTE + (", ".join(self.empty_streams) or "none"), self)
            pulumi.log.info(DRAINED_DURABLES_NOTE + (", ".join(self.drained_durables) or "none"), self)
        self.register_outputs({"streams": self.stream_subjects, "bindings": self.bindings})
