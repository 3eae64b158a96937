"""The stack's configuration, parsed once into typed models.

Every key is validated before any resource is registered, so a wrong value
fails `pulumi preview` with the key, the value and what is allowed.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components.durations import Duration, ns
from components.errors import ConfigError
from components.nats_client import ConnectionSettings
from components.subjects import name_problem, subject_problem

Role = Literal["legacy", "core", "vendor", "dlq"]
ROLES: tuple[Role, ...] = ("legacy", "core", "vendor", "dlq")

#: The Pulumi project name: the namespace of every stack config key.
PROJECT = "aa-event-bus"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class StreamSettings(_Model):
    """Per-stream settings (the seeds' STREAM_*_NAME overrides and retention)."""

    name: str
    max_age: Duration

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if problem := name_problem(value):
            raise ValueError(problem)
        return value


class DurableSettings(_Model):
    """A service's durable consumer (the seeds' NORMALIZE_HRV_* values)."""

    durable: str
    filter_subject: str
    max_deliver: int = Field(default=5, ge=1)
    ack_wait: Duration = "60s"
    max_ack_pending: int = Field(default=1000, ge=1)

    @field_validator("durable")
    @classmethod
    def _durable(cls, value: str) -> str:
        if problem := name_problem(value, "consumer"):
            raise ValueError(problem)
        return value

    @field_validator("filter_subject")
    @classmethod
    def _filter(cls, value: str) -> str:
        if problem := subject_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("ack_wait")
    @classmethod
    def _ack_wait(cls, value: str) -> str:
        if ns(value) <= 0:
            raise ValueError("ackWait must be longer than 0, e.g. '60s'")
        return value


def _default_streams() -> dict[Role, StreamSettings]:
    return {
        "legacy": StreamSettings(name="ATHLETE_ALLY_EVENTS", max_age="24h"),
        "core": StreamSettings(name="AA_CORE_HOT", max_age="48h"),
        "vendor": StreamSettings(name="AA_VENDOR_HOT", max_age="48h"),
        "dlq": StreamSettings(name="AA_DLQ", max_age="14d"),
    }


def _default_durables() -> dict[Literal["hrv", "oura"], DurableSettings]:
    return {
        "hrv": DurableSettings(durable="normalize-hrv-durable", filter_subject="athlete-ally.hrv.>"),
        "oura": DurableSettings(durable="normalize-oura", filter_subject="vendor.oura.>"),
    }


class StackConfig(_Model):
    """Everything the program reads from `Pulumi.<stack>.yaml`, in one validated object."""

    phase: int = Field(ge=0, le=3, description="Migration phase: 0, 1, 2 or 3")
    nats_url: str = Field(description="One or more NATS URLs, comma-separated")
    replicas: int = Field(default=1, ge=1, le=5, description="Stream replicas: 1 on a single server, 3 in production")
    storage: Literal["file", "memory"] = "file"
    compression: Literal["s2", "none"] = "s2"
    discard: Literal["old", "new"] = "old"
    duplicate_window: Duration = "2m"
    streams: dict[Role, StreamSettings] = Field(default_factory=_default_streams)
    consumers: dict[Literal["hrv", "oura"], DurableSettings] = Field(default_factory=_default_durables)
    allow_data_loss: tuple[str, ...] = Field(
        default=(), description="Stream names or STREAM/durable ids that may be deleted or replaced with data in them"
    )
    drain_timeout: Duration = Field(default="30s", description="How long a removed consumer may take to drain")
    claim_retry_timeout: Duration = Field(
        default="30s", description="How long a subject hand-over retries its claim (then the give-back) across reconnects"
    )
    verify: bool = Field(default=True, description="Run the phase verification at the end of pulumi up")
    rollout_hooks: dict[int, str] = Field(
        default_factory=dict, description="Per-phase shell command run after the phase is applied (e.g. kubectl rollout restart)"
    )

    @field_validator("compression", mode="before")
    @classmethod
    def _compression(cls, value: object) -> object:
        if isinstance(value, bool):
            return "s2" if value else "none"
        return value

    @field_validator("streams", mode="before")
    @classmethod
    def _merge_streams(cls, value: object) -> object:
        # Overrides may name only some streams, or only some fields of one.
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {k: v.model_dump(by_alias=True) for k, v in _default_streams().items()}
        for role, override in value.items():
            if role in merged and isinstance(override, dict):
                merged[role] = {**merged[role], **{to_camel(k): v for k, v in override.items()}}
            else:
                merged[role] = override
        return merged

    @field_validator("consumers", mode="before")
    @classmethod
    def _merge_consumers(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {k: v.model_dump(by_alias=True) for k, v in _default_durables().items()}
        for key, override in value.items():
            if key in merged and isinstance(override, dict):
                merged[key] = {**merged[key], **{to_camel(k): v for k, v in override.items()}}
            else:
                merged[key] = override
        return merged

    @field_validator("rollout_hooks", mode="before")
    @classmethod
    def _hook_keys(cls, value: object) -> object:
        if isinstance(value, dict):
            return {int(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        names = [s.name for s in self.streams.values()]
        if len(set(names)) != len(names):
            raise ValueError(f"streams: each stream needs its own name, got {names}")
        for role, settings in self.streams.items():
            if ns(settings.max_age) and ns(self.duplicate_window) > ns(settings.max_age):
                raise ValueError(
                    f"duplicateWindow: {self.duplicate_window} is longer than streams.{role}.maxAge {settings.max_age}; "
                    "make it at most the shortest maxAge"
                )
        if any(h < 0 or h > 3 for h in self.rollout_hooks):
            raise ValueError("rolloutHooks: keys are phases 0 to 3")
        return self

    def stream_name(self, role: Role) -> str:
        return self.streams[role].name

    def managed_names(self) -> list[str]:
        return [self.streams[r].name for r in ROLES]


#: The stack config keys the program reads (credentials aside), as written in Pulumi.<stack>.yaml.
STACK_KEYS = tuple(field.alias or name for name, field in StackConfig.model_fields.items())


def _friendly(exc: ValidationError, prefix: str) -> ConfigError:
    lines = []
    first_key = prefix
    for i, err in enumerate(exc.errors()):
        loc = ".".join(to_camel(str(p)) if isinstance(p, str) else str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and (named := re.match(r"([a-z][\w.]*): ", msg)):
            # A check across keys names its key first ("streams: ...").
            loc, msg = named.group(1), msg[named.end():]
        key = f"{prefix}:{loc}" if loc else prefix
        if i == 0:
            first_key = key
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{key}: {msg}{shown}")
    return ConfigError(first_key, "invalid stack config:\n  " + "\n  ".join(lines))


def parse_stack_config(raw: dict[str, Any], project: str = PROJECT) -> StackConfig:
    """Parse raw config values (already JSON-decoded) into a StackConfig, or raise ConfigError."""
    try:
        return StackConfig.model_validate(raw)
    except ValidationError as exc:
        raise _friendly(exc, project) from None


def load_pulumi_config() -> tuple[StackConfig, ConnectionSettings]:
    """Read the current stack's config through the Pulumi SDK (inside a Pulumi program only)."""
    import pulumi

    cfg = pulumi.Config()
    raw: dict[str, Any] = {}
    for name, field in StackConfig.model_fields.items():
        key = field.alias or name
        value = cfg.get(key)
        if value is None:
            continue
        if get_origin(field.annotation) in (dict, tuple):  # structured values arrive as JSON
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"{cfg.name}:{key}", f"expected a list or mapping, got {value!r}") from None
        raw[key] = value  # numbers and booleans arrive as text; the model parses them
    stack = parse_stack_config(raw, cfg.name)
    # Secret values are read as plain text here, kept in memory only, and handed to the
    # resources as Pulumi secrets (see resource_common.connection_inputs).
    from pulumi.runtime import get_config

    keys = {
        "user": "natsUser",
        "password": "natsPassword",
        "token": "natsToken",
        "creds": "natsCreds",
        "nkey_seed": "natsNkeySeed",
        "tls_ca": "natsTlsCa",
        "tls_cert": "natsTlsCert",
        "tls_key": "natsTlsKey",
    }
    plain = {field: get_config(f"{cfg.name}:{key}") for field, key in keys.items()}
    return stack, ConnectionSettings.model_validate({"servers": stack.nats_url, **{k: v for k, v in plain.items() if v}})
