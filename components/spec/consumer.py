"""A durable consumer's desired state, and what the server cannot change in place."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components.spec.durations import Duration, format_duration, ns
from components.spec.subjects import name_problem, subject_problem, subjects_overlap


class ConsumerSpec(BaseModel):
    """A durable consumer's desired config, in the units people write."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    stream: str = Field(description="The stream the consumer reads; moving it means a new consumer")
    durable_name: str
    description: str = ""
    deliver_policy: Literal["all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject"] = "all"
    opt_start_seq: int | None = Field(default=None, ge=1)
    opt_start_time: str | None = None
    ack_policy: Literal["explicit", "all", "none"] = "explicit"
    ack_wait: Duration = Field(default="30s", description='How long a delivery waits for its ack, e.g. "60s"')
    max_deliver: int = Field(default=-1, description="Deliveries per message; -1 for no limit")
    backoff: tuple[Duration, ...] = ()
    filter_subjects: tuple[str, ...] = ()
    replay_policy: Literal["instant", "original"] = "instant"
    max_ack_pending: int = 1000
    max_waiting: int | None = Field(default=None, description="Pull requests waiting at once (pull only, default 512)")
    inactive_threshold: Duration = "0"
    replicas: int = Field(default=0, ge=0, le=5, description="0 follows the stream's replicas")
    mem_storage: bool = False
    headers_only: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    # push consumers
    deliver_subject: str | None = None
    deliver_group: str | None = None
    flow_control: bool = False
    idle_heartbeat: Duration = "0"
    rate_limit_bps: int = Field(default=0, ge=0)

    @field_validator("stream", "durable_name")
    @classmethod
    def _names(cls, value: str, info: Any) -> str:
        what = "stream" if info.field_name == "stream" else "consumer"
        if problem := name_problem(value, what):
            raise ValueError(problem)
        return value

    @field_validator("filter_subjects", mode="before")
    @classmethod
    def _one_filter(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("filter_subjects", mode="after")
    @classmethod
    def _filters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for subject in value:
            if problem := subject_problem(subject):
                raise ValueError(problem)
        for i, a in enumerate(value):
            for b in value[i + 1 :]:
                if subjects_overlap(a, b):
                    raise ValueError(f"filter subjects {a!r} and {b!r} overlap (10138); keep only one")
        return tuple(sorted(value))

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in value.items() if not k.startswith("_nats.")}

    @model_validator(mode="before")
    @classmethod
    def _pull_defaults(cls, data: Any) -> Any:
        # The server gives pull consumers max_waiting 512 when it is not set.
        if isinstance(data, dict) and not (data.get("deliver_subject") or data.get("deliverSubject")):
            if data.get("max_waiting") is None and data.get("maxWaiting") is None:
                data = {**data, "max_waiting": 512}
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
        return self

    @property
    def pull(self) -> bool:
        return self.deliver_subject is None

    def wire(self) -> dict:
        cfg: dict[str, Any] = {
            "durable_name": self.durable_name,
            "deliver_policy": self.deliver_policy,
            "ack_policy": self.ack_policy,
            "max_deliver": self.max_deliver,
            "replay_policy": self.replay_policy,
            "num_replicas": self.replicas,
        }
        if self.ack_policy != "none":
            cfg["ack_wait"] = ns(self.ack_wait)
            cfg["max_ack_pending"] = self.max_ack_pending
        optional = {
            "description": self.description or None,
            "opt_start_seq": self.opt_start_seq,
            "opt_start_time": self.opt_start_time,
            "backoff": [ns(b) for b in self.backoff] or None,
            "inactive_threshold": ns(self.inactive_threshold) or None,
            "mem_storage": self.mem_storage or None,
            "headers_only": self.headers_only or None,
            "metadata": dict(self.metadata) or None,
            "max_waiting": self.max_waiting,
            "deliver_subject": self.deliver_subject,
            "deliver_group": self.deliver_group,
            "flow_control": self.flow_control or None,
            "idle_heartbeat": ns(self.idle_heartbeat) or None,
            "rate_limit_bps": self.rate_limit_bps or None,
        }
        cfg.update({k: v for k, v in optional.items() if v is not None})
        if len(self.filter_subjects) == 1:
            cfg["filter_subject"] = self.filter_subjects[0]
        elif self.filter_subjects:
            cfg["filter_subjects"] = list(self.filter_subjects)
        return cfg

    @classmethod
    def from_wire(cls, stream: str, config: dict) -> ConsumerSpec:
        filters = config.get("filter_subjects") or ([config["filter_subject"]] if config.get("filter_subject") else [])
        data: dict[str, Any] = {
            "stream": stream,
            "durable_name": config.get("durable_name") or config["name"],
            "description": config.get("description") or "",
            "deliver_policy": config.get("deliver_policy", "all"),
            "opt_start_seq": config.get("opt_start_seq") or None,
            "opt_start_time": config.get("opt_start_time") or None,
            "ack_policy": config.get("ack_policy", "explicit"),
            "ack_wait": format_duration(int(config.get("ack_wait") or 30_000_000_000)),
            "max_deliver": config.get("max_deliver", -1) or -1,
            "backoff": [format_duration(int(b)) for b in config.get("backoff") or []],
            "filter_subjects": filters,
            "replay_policy": config.get("replay_policy", "instant"),
            "max_ack_pending": config.get("max_ack_pending") or 1000,
            "max_waiting": config.get("max_waiting") if not config.get("deliver_subject") else None,
            "inactive_threshold": format_duration(int(config.get("inactive_threshold") or 0)),
            "replicas": config.get("num_replicas") or 0,
            "mem_storage": bool(config.get("mem_storage")),
            "headers_only": bool(config.get("headers_only")),
            "metadata": config.get("metadata") or {},
            "deliver_subject": config.get("deliver_subject") or None,
            "deliver_group": config.get("deliver_group") or None,
            "flow_control": bool(config.get("flow_control")),
            "idle_heartbeat": format_duration(int(config.get("idle_heartbeat") or 0)),
            "rate_limit_bps": config.get("rate_limit_bps") or 0,
        }
        return cls.model_validate(data)

    def props(self, *, full: bool = False) -> dict[str, Any]:
        """Flat Pulumi properties: inputs only what differs from the defaults (see StreamSpec.props)."""
        return self.model_dump(mode="json", exclude_defaults=not full)

    @property
    def id(self) -> str:
        return f"{self.stream}/{self.durable_name}"


def replace_reasons(old: ConsumerSpec, new: ConsumerSpec) -> dict[str, str]:
    """Fields whose change needs the consumer deleted and created again (server: 10012)."""
    reasons: dict[str, str] = {}
    if old.stream != new.stream:
        reasons["stream"] = "a consumer cannot move to another stream"
    if old.durable_name != new.durable_name:
        reasons["durable_name"] = "a durable cannot be renamed"
    if old.pull != new.pull:
        reasons["deliver_subject"] = "a consumer cannot switch between push and pull"
    for field in ("deliver_policy", "opt_start_seq", "opt_start_time", "ack_policy", "replay_policy",
                  "flow_control", "idle_heartbeat", "mem_storage", "max_waiting"):
        if getattr(old, field) != getattr(new, field):
            reasons[field] = f"{field} cannot be updated (10012)"
    return reasons


