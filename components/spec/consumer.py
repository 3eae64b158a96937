"""A durable consumer's desired state, and what the server cannot change in place.

Each field declares its wire name, unit and in-place rule next to it (`components.spec.fields`);
`wire`, `from_wire`, `props` and `replace_reasons` derive from that.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from components.spec import fields
from components.spec.checked import ConsumerName, StreamName
from components.spec.durations import ns
from components.spec.fields import Duration, Fixed, When, Wire, WireModel, metadata_without, subject_list
from components.spec.subjects import subject_problem


def _fixed(field: str) -> Fixed:
    return Fixed(f"{field} cannot be updated (10012)")


def _rfc3339(value: object) -> object:
    # The server keeps times in UTC and prints them so: hold them the same way.
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"expected an RFC 3339 time like '2030-01-01T00:00:00Z', got {value!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; end it with Z or an offset like +02:00")
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


class ConsumerSpec(WireModel):
    """A durable consumer's desired config, in the units people write."""

    stream: Annotated[StreamName, Fixed("a consumer cannot move to another stream")] = Field(
        description="The stream the consumer reads; moving it means a new consumer")
    durable_name: Annotated[ConsumerName, Fixed("a durable cannot be renamed")]
    description: str = ""
    deliver_policy: Annotated[Literal["all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject"],
                              _fixed("deliver_policy")] = "all"
    opt_start_seq: Annotated[int | None, _fixed("opt_start_seq")] = Field(default=None, ge=1)
    opt_start_time: Annotated[str | None, _fixed("opt_start_time")] = None
    ack_policy: Annotated[Literal["explicit", "all", "none"], _fixed("ack_policy")] = "explicit"
    ack_wait: Duration = Field(default="30s", description='How long a delivery waits for its ack, e.g. "60s"')
    max_deliver: int = Field(default=-1, description="Deliveries per message; -1 for no limit")
    backoff: tuple[Duration, ...] = ()
    filter_subjects: Annotated[tuple[str, ...], subject_list(
        "filter subjects {a!r} and {b!r} overlap (10138); keep only one", one=True)] = ()
    replay_policy: Annotated[Literal["instant", "original"], _fixed("replay_policy")] = "instant"
    max_ack_pending: int = 1000
    max_waiting: Annotated[int | None, _fixed("max_waiting")] = Field(
        default=None, description="Pull requests waiting at once (pull only, default 512)")
    inactive_threshold: Duration = "0"
    replicas: Annotated[int, Wire("num_replicas")] = Field(default=0, ge=0, le=5, description="0 follows the stream's replicas")
    mem_storage: Annotated[bool, _fixed("mem_storage")] = False
    headers_only: bool = False
    metadata: Annotated[dict[str, str], metadata_without("_nats.")] = Field(default_factory=dict)
    sample_freq: str = Field(default="", pattern=r"^(\d{1,3}%?)?$", description='Share of acks sampled as advisories, e.g. "10%"')
    # The server keeps pause_until on update: the provider pauses and resumes with $JS.API.CONSUMER.PAUSE.
    pause_until: Annotated[str | None, BeforeValidator(_rfc3339), Wire(api_level=1)] = Field(
        default=None, description="RFC 3339 time until which the consumer delivers nothing")
    # pull consumers
    max_batch: int = Field(default=0, ge=0, description="Most messages one pull request may ask for; 0 for no limit")
    max_expires: Duration = Field(default="0", description='Longest wait one pull request may ask for, e.g. "30s"')
    max_bytes: int = Field(default=0, ge=0, description="Most bytes one pull request may ask for; 0 for no limit")
    priority_groups: Annotated[tuple[str, ...], Wire(api_level=1)] = Field(
        default=(), description="Groups pull requests name to be served by priority_policy")
    priority_policy: Annotated[Literal["overflow", "pinned_client", "prioritized"] | None, Wire(api_level=1)] = None
    priority_timeout: Annotated[Duration, Wire(api_level=1)] = Field(
        default="0", description='How long a pinned client keeps its pin without pulling (pinned_client; server default "2m")')
    # push consumers
    deliver_subject: Annotated[str | None, When(
        "a consumer cannot switch between push and pull", lambda a, b: (a is None) != (b is None))] = None
    deliver_group: str | None = None
    flow_control: Annotated[bool, _fixed("flow_control")] = False
    idle_heartbeat: Annotated[Duration, _fixed("idle_heartbeat")] = "0"
    rate_limit_bps: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _pull_defaults(cls, data: Any) -> Any:
        # The server gives pull consumers max_waiting 512 when it is not set.
        if isinstance(data, dict) and not (data.get("deliver_subject") or data.get("deliverSubject")):
            if data.get("max_waiting") is None and data.get("maxWaiting") is None:
                data = {**data, "max_waiting": 512}
        # ... and a pinned_client policy a 2m pin timeout.
        if isinstance(data, dict) and (data.get("priority_policy") or data.get("priorityPolicy")) == "pinned_client":
            if data.get("priority_timeout", data.get("priorityTimeout")) in (None, "", "0", 0):
                data = {**data, "priority_timeout": "2m"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ConsumerSpec:
        if self.ack_policy != "none" and ns(self.ack_wait) <= 0:
            raise ValueError("ack_wait must be longer than 0, e.g. '30s'")
        if self.max_deliver == 0 or self.max_deliver < -1:
            raise ValueError("max_deliver must be -1 (no limit) or at least 1")
        if self.backoff:
            if any(ns(b) <= 0 for b in self.backoff):
                raise ValueError("every backoff step must be longer than 0")
            if ns(self.ack_wait) != ns(self.backoff[0]):
                raise ValueError(f"with backoff, ack_wait must equal the first backoff step ({self.backoff[0]}); the server refuses anything else")
            if self.max_deliver != -1 and self.max_deliver <= len(self.backoff):
                raise ValueError(f"max_deliver ({self.max_deliver}) must be greater than the number of backoff steps ({len(self.backoff)})")
        if self.max_ack_pending == 0 or self.max_ack_pending < -1:
            raise ValueError("max_ack_pending must be -1 (no limit) or at least 1")
        if self.deliver_policy == "by_start_sequence" and not self.opt_start_seq:
            raise ValueError("deliver_policy by_start_sequence needs opt_start_seq")
        if self.deliver_policy == "by_start_time" and not self.opt_start_time:
            raise ValueError("deliver_policy by_start_time needs opt_start_time")
        if self.deliver_subject is None:
            if self.flow_control or ns(self.idle_heartbeat) or self.deliver_group or self.rate_limit_bps:
                raise ValueError("flow_control, idle_heartbeat, deliver_group and rate_limit_bps need deliver_subject (push)")
            if self.max_waiting is not None and self.max_waiting < 1:
                raise ValueError("max_waiting must be at least 1")
        else:
            if problem := subject_problem(self.deliver_subject):
                raise ValueError(f"deliver_subject: {problem}")
            if self.max_waiting is not None:
                raise ValueError("max_waiting applies to pull consumers only; drop it or drop deliver_subject")
            if self.flow_control and not ns(self.idle_heartbeat):
                raise ValueError("flow_control needs idle_heartbeat")
        self._check_priority()
        if 0 < ns(self.max_expires) < ns("1ms"):
            raise ValueError("max_expires must be at least 1ms")
        return self

    def _check_priority(self) -> None:
        """The server's rules for priority groups (10178 and its neighbours)."""
        if self.priority_policy is None:
            if self.priority_groups or ns(self.priority_timeout):
                raise ValueError("priority_groups and priority_timeout need a priority_policy")
            return
        if not self.pull:
            raise ValueError("priority groups are for pull consumers only; drop deliver_subject or priority_policy")
        if not self.priority_groups:
            raise ValueError(f"priority_policy {self.priority_policy} needs priority_groups")
        if self.priority_policy != "pinned_client" and ns(self.priority_timeout):
            raise ValueError("priority_timeout applies to priority_policy pinned_client only")

    @property
    def pull(self) -> bool:
        return self.deliver_subject is None

    def wire(self) -> dict:
        """The config the JetStream API takes: wire names, durations in nanoseconds.

        One filter goes as `filter_subject`, several as `filter_subjects`; with ack policy
        none, no ack wait and no ack limit.
        """
        cfg = self.wire_fields()
        cfg.pop("stream")
        if self.ack_policy == "none":
            cfg.pop("ack_wait", None), cfg.pop("max_ack_pending", None)
        if len(self.filter_subjects) == 1:
            cfg["filter_subject"] = cfg.pop("filter_subjects")[0]
        return cfg

    @classmethod
    def from_wire(cls, stream: str, config: dict) -> ConsumerSpec:
        """The spec a server-reported consumer config amounts to (defaults normalised)."""
        data = cls.fields_from_wire(config)
        data["stream"] = stream
        data.setdefault("durable_name", config.get("name"))
        if config.get("filter_subject") and not config.get("filter_subjects"):
            data["filter_subjects"] = [config["filter_subject"]]
        return cls.model_validate(data)

    @property
    def id(self) -> str:
        return f"{self.stream}/{self.durable_name}"


def replace_reasons(old: ConsumerSpec, new: ConsumerSpec) -> dict[str, str]:
    """Fields whose change needs the consumer deleted and created again (server: 10012)."""
    return fields.replace_reasons(old, new)
