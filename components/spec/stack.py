"""The stack's configuration, parsed once into typed models.

Every key is validated before any resource is registered, so a wrong value
fails `pulumi preview` with the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_pascal

from components.jetstream.errors import ConfigError
from components.jetstream.settings import ConnectionSettings
from components.spec.checked import ConsumerName, Duration, StreamName, Subject, positive
from components.spec.durations import ns
from components.spec.project import PROJECT
from components.spec.stream import StreamSpec
from components.spec.table import (
    SEED_DURABLES,
    SEEDS,
    StreamEntryFields,
    Table,
    TableError,
    TopologyConfig,
    resolve,
    settings_of,
)

Role = Literal["legacy", "core", "vendor", "dlq"]
ROLES: tuple[Role, ...] = ("legacy", "core", "vendor", "dlq")



class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


#: URL schemes a NATS client connects with.
URL_SCHEMES = ("nats", "tls", "ws", "wss")


def url_problem(url: str) -> str | None:
    """Why `url` is not a NATS server URL (scheme nats, tls, ws or wss, and a host), or None."""
    example = "e.g. nats://nats-0:4222"
    if not url:
        return f"empty URL in the list; give one or more URLs, comma-separated, {example}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc}); {example}"
    if parts.scheme not in URL_SCHEMES:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        return f"{url!r} has {shown}; use one of {', '.join(s + '://' for s in URL_SCHEMES)}, {example}"
    if not parts.hostname:
        return f"{url!r} names no host; {example}"
    if port == 0:
        return f"{url!r}: port 0 is not a server port; {example}"
    return None


class StreamSettings(_Model):
    """Per-stream settings (the seeds' STREAM_*_NAME overrides and retention)."""

    name: StreamName
    max_age: Duration


class DurableSettings(_Model):
    """A service's durable consumer (the seeds' NORMALIZE_HRV_* values)."""

    durable: ConsumerName
    filter_subject: Subject
    max_deliver: int = Field(default=5, ge=1)
    ack_wait: Annotated[Duration, positive("ackWait must be longer than 0, e.g. '60s'")] = "60s"
    max_ack_pending: int = Field(default=1000, ge=1)


class ProbeSettings(_Model):
    """The live routing probe and durable health checks the phase gate runs after the structural verify."""

    enabled: bool = Field(default=True, description="Publish one probe per subject pattern after each applied phase")
    prefix: str = Field(default="_probe", description="The token probe subjects start with under each pattern")
    max_pending: int | None = Field(default=None, ge=0, description="A durable with more pending fails the gate")
    max_ack_pending: int | None = Field(default=None, ge=0, description="A durable with more awaiting ack fails the gate")
    max_redelivered: int | None = Field(default=None, ge=0, description="A durable with more redelivered fails the gate")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # One plain token: it replaces a wildcard inside a subject pattern.
        if not value or any(c.isspace() or c in ".*>" for c in value):
            raise ValueError("must be one subject token without '.', '*', '>' or whitespace, e.g. '_probe'")
        return value


def _default_streams() -> dict[Role, StreamSettings]:
    return {entry["role"]: StreamSettings(name=name, max_age=entry["maxAge"]) for name, entry in SEEDS["streams"].items()}


def _default_durables() -> dict[Literal["hrv", "oura"], DurableSettings]:
    return {key: DurableSettings(durable=name, filter_subject=SEEDS["durables"][name]["filterSubject"])  # type: ignore[misc]
            for key, name in SEED_DURABLES.items()}


def seeds_topology(streams: dict[Role, StreamSettings],
                   consumers: dict[Literal["hrv", "oura"], DurableSettings]) -> tuple[TopologyConfig, dict[str, str]]:
    """The seeds' table with the `streams`/`consumers` overrides applied, and the stack key of each entry.

    A renamed stream is renamed everywhere (durable homes, candidates); a durable takes
    its override's name, filter and settings.
    """
    rename = {name: streams[entry["role"]].name for name, entry in SEEDS["streams"].items()}
    keys: dict[str, str] = {}
    raw_streams: dict[str, Any] = {}
    for entry in SEEDS["streams"].values():
        settings = streams[entry["role"]]
        raw_streams[settings.name] = {**entry, "maxAge": settings.max_age}
        keys[settings.name] = f"streams.{entry['role']}"
    raw_durables: dict[str, Any] = {}
    for key, name in SEED_DURABLES.items():
        durable = consumers[key]  # type: ignore[index]
        entry = SEEDS["durables"][name]
        raw_durables[durable.durable] = {
            **entry, **durable.model_dump(by_alias=True, exclude={"durable"}),
            "homes": {p: rename[s] for p, s in entry["homes"].items()},
            "candidates": [rename[s] for s in entry["candidates"]],
        }
        keys[durable.durable] = f"consumers.{key}"
    table = TopologyConfig.model_validate({**SEEDS, "streams": raw_streams, "durables": raw_durables})
    return table, keys


class StackConfig(_Model):
    """Everything the program reads from `Pulumi.<stack>.yaml`, in one validated object."""

    phase: int = Field(ge=0, description=(
        "Migration phase, one of the topology's (the seeds' 0-3: 0 legacy owns everything (+ AA_DLQ), "
        "1 vendor.> moves to AA_VENDOR_HOT, 2 athlete-ally.> and sleep.* move to AA_CORE_HOT, 3 legacy removed)"))
    nats_url: str = Field(description=(
        "NATS server URL(s), comma-separated, each nats://, tls://, ws:// or wss:// with a host, "
        "e.g. nats://nats-0:4222,nats://nats-1:4222"))
    replicas: int = Field(default=1, ge=1, le=5, description="Stream replicas, 1-5: 1 on a single server, 3 in production")
    storage: Literal["file", "memory"] = Field(default="file", description="Storage of every stream: file or memory")
    compression: Literal["s2", "none"] = Field(
        default="s2", description="Compression of every stream: s2 or none (the seeds' true/false also work)")
    discard: Literal["old", "new"] = Field(default="old", description="What a full stream discards: old or new")
    duplicate_window: Duration = Field(default="2m", description="De-duplication window for Nats-Msg-Id, e.g. 2m")
    max_bytes: int = Field(default=-1, description="Size limit of every stream in bytes; -1 for none")
    topology: TopologyConfig | None = Field(default=None, description=(
        "The streams, phases and durables: {phases: {0: text, ...}, streams: {NAME: {phases: {0: [subjects]}, "
        "maxAge, ...}}, durables: {name: {filterSubject, homes: {0: NAME}, candidates, ...}}}; "
        "unset: the seeds' table (examples/topology-seeds.yaml)"))
    streams: dict[Role, StreamSettings] = Field(default_factory=_default_streams, description=(
        "Per-stream overrides of the seeds' table, {legacy|core|vendor|dlq: {name, maxAge}}; unset fields keep "
        "the seeds' values"))
    consumers: dict[Literal["hrv", "oura"], DurableSettings] = Field(default_factory=_default_durables, description=(
        "Per-durable overrides of the seeds' table, {hrv|oura: {durable, filterSubject, maxDeliver, ackWait, "
        "maxAckPending}}"))
    allow_data_loss: tuple[str, ...] = Field(
        default=(), description="Stream names or STREAM/durable ids that may be deleted or replaced with data in them"
    )
    drain_timeout: Duration = Field(default="30s", description="How long deleting a durable waits for its last messages")
    claim_retry_timeout: Annotated[Duration, positive(
        "must be longer than 0, e.g. '30s' (how long a hand-over retries across reconnects)")] = Field(
        default="30s", description="How long a subject hand-over retries its claim (then the give-back) across reconnects"
    )
    verify: bool = Field(default=True, description="Run the phase verification at the end of pulumi up")
    rollout_hooks: dict[int, str] = Field(
        default_factory=dict, description="Per-phase shell command run after the phase is applied (e.g. kubectl rollout restart)"
    )
    probe: ProbeSettings = Field(
        default_factory=ProbeSettings, description="The gate's routing probe and durable health thresholds"
    )

    _table: Table = PrivateAttr()

    @field_validator("topology", mode="before")
    @classmethod
    def _topology_json(cls, value: object) -> object:
        # pulumi.Config hands a structured value over as JSON text; Pulumi.yaml's default is {}.
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else None
            except ValueError:
                raise ValueError("expected a mapping {phases, streams, durables}") from None
        return value or None

    @model_validator(mode="before")
    @classmethod
    def _one_table(cls, data: Any) -> Any:
        # The overrides rename and tune the seeds' table; a declared table says it all itself.
        if isinstance(data, dict) and data.get("topology"):
            for key in ("streams", "consumers"):
                if data.get(key):
                    where = "topology.streams.<NAME>" if key == "streams" else "topology.durables.<name>"
                    raise ValueError(f"{key}: overrides the seeds' table only, and this stack declares its own "
                                     f"topology; write these settings under {where} and remove {key}")
        return data

    @field_validator("compression", mode="before")
    @classmethod
    def _compression(cls, value: object) -> object:
        # The seeds write a boolean; Pulumi hands it over as the text "true"/"false".
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if isinstance(value, bool):
            return "s2" if value else "none"
        return value

    @field_validator("max_bytes")
    @classmethod
    def _max_bytes(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("use -1 for no limit or a positive number of bytes")
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        for entry in value.split(","):
            if problem := url_problem(entry.strip()):
                raise ValueError(problem)
        return value

    @field_validator("streams", "consumers", mode="before")
    @classmethod
    def _merge_overrides(cls, value: object, info: Any) -> object:
        # Overrides may name only some streams (durables), or only some fields of one.
        if not isinstance(value, dict):
            return value
        defaults = _default_streams() if info.field_name == "streams" else _default_durables()
        merged: dict[str, Any] = {k: v.model_dump(by_alias=True) for k, v in defaults.items()}
        for key, override in value.items():
            if key in merged and isinstance(override, dict):
                merged[key] = {**merged[key], **{to_camel(k): v for k, v in override.items()}}
            else:
                merged[key] = override
        return merged

    @field_validator("probe", mode="before")
    @classmethod
    def _probe_json(cls, value: object) -> object:
        # pulumi.Config hands a structured value over as JSON text.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError('expected a mapping such as {"prefix": "_probe", "maxPending": 1000}') from None
        return value

    @field_validator("rollout_hooks", mode="before")
    @classmethod
    def _hook_keys(cls, value: object) -> object:
        if isinstance(value, dict):
            return {int(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        if self.topology is None:
            names = [s.name for s in self.streams.values()]
            if len(set(names)) != len(names):
                raise ValueError(f"streams: each stream needs its own name, got {names}")
            table, keys = seeds_topology(self.streams, self.consumers)
        else:
            table, keys = self.topology, {}
        for name, entry in table.streams.items():
            # The stack-wide window applies where a stream sets none of its own.
            own = settings_of(entry, StreamEntryFields)
            age = own.get("max_age", "0")
            if "duplicate_window" not in own and ns(age) and ns(self.duplicate_window) > ns(age):
                key = keys.get(name, f"topology.streams.{name}")
                raise ValueError(
                    f"duplicateWindow: {self.duplicate_window} is longer than {key}.maxAge {age}; "
                    "make it at most the shortest maxAge"
                )
        try:
            self._table = resolve(table, {n: getattr(self, n) for n in STREAM_WIDE}, keys)
        except TableError as exc:
            raise ValueError(str(exc)) from None
        last = self._table.last_phase
        if self.phase > last:
            raise ValueError(f"phase: {self.phase} is not a phase of the topology: it must be less than or equal to "
                             f"{last} ({self._table.phase_range()})")
        if any(h < 0 or h > last for h in self.rollout_hooks):
            raise ValueError(f"rolloutHooks: keys are {self._table.phase_range()}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        # Dumped, the config parses back the same (the phase gate's input): no table key for
        # the seeds' table, no seeds' overrides beside a declared table, and of a table only
        # what it sets (a stream field it leaves out takes the stack-wide value).
        data = handler(self)
        if self.topology is None:
            data.pop("topology", None)
        else:
            for key in ("streams", "consumers"):
                data.pop(key, None)
            if "topology" in data:
                data["topology"] = self.topology.model_dump(mode=info.mode, by_alias=info.by_alias, exclude_unset=True)
        return data

    @property
    def table(self) -> Table:
        """The topology table in effect: `topology`, else the seeds' table with the overrides applied."""
        return self._table

    def stream_name(self, role: str) -> str:
        """The name of the table's stream labelled `role` (the seeds' legacy, core, vendor, dlq)."""
        return next(s.name for s in self._table.streams if s.role == role)

    def managed_names(self) -> list[str]:
        """Every stream of the table, in its order: the streams this stack manages in any phase."""
        return [s.name for s in self._table.streams]


#: Stack keys that set a stream field for every stream (a stream of the table may set its own).
STREAM_WIDE = tuple(name for name in StackConfig.model_fields if name in StreamSpec.model_fields)


#: The stack config keys the program reads (credentials aside), as written in Pulumi.<stack>.yaml.
STACK_KEYS = tuple(field.alias or name for name, field in StackConfig.model_fields.items())

#: Credential keys (read as secrets, beside StackConfig) -> the ConnectionSettings field each fills:
#: every optional text field of ConnectionSettings, as `nats` + its name (natsUser, natsTlsCa, ...).
CREDENTIAL_KEYS: dict[str, str] = {
    f"nats{to_pascal(name)}": name for name in ConnectionSettings.credential_fields()
}


def _value_type(annotation: Any) -> Any:
    """The annotation itself, or for an optional field (`X | None`) the type of its value."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _declared_type(annotation: Any) -> dict[str, Any]:
    """The Pulumi.yaml `type` (and `items`) of a field's annotation."""
    annotation = _value_type(annotation)
    origin = get_origin(annotation)
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return {"type": "object"}
    if origin is tuple:
        return {"type": "array", "items": {"type": "string"}}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    return {"type": "string"}  # text, Literal choices, durations


def project_config() -> dict[str, dict[str, Any]]:
    """The `config:` declarations of Pulumi.yaml, derived from StackConfig and the credential keys.

    Every key has a type and a description, so `pulumi config` and the engine know them.
    Optional keys declare their default (the engine would otherwise require them): a
    scalar its model default, a mapping or list the empty value (no overrides).
    """
    declared: dict[str, dict[str, Any]] = {}
    for name, field in StackConfig.model_fields.items():
        entry: dict[str, Any] = {**_declared_type(field.annotation), "description": field.description or name}
        if not field.is_required():
            default = field.get_default(call_default_factory=False)
            if entry["type"] == "object":
                default = {}
            elif entry["type"] == "array":
                default = []
            entry["default"] = default
        declared[field.alias or name] = entry
    for key, name in CREDENTIAL_KEYS.items():
        description = ConnectionSettings.credential_fields()[name]
        declared[key] = {"type": "string", "description": description, "default": ""}
    return declared


def _child_keys(annotation: Any) -> dict[str, Any] | None:
    """The keys a mapping of this type may hold, each with its value's type; None when any key goes.

    A model's keys are its fields (camelCase as written in the stack file, or snake_case);
    a dict keyed by a Literal takes exactly those values; other dicts and scalars take any.
    """
    annotation = _value_type(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        keys: dict[str, Any] = {}
        for name, field in annotation.model_fields.items():
            keys[field.alias or name] = field.annotation
            keys.setdefault(name, field.annotation)
        return keys
    if get_origin(annotation) is dict:
        key_type, value_type = get_args(annotation)
        if get_origin(key_type) is Literal:
            return {str(k): value_type for k in get_args(key_type)}
        if isinstance(value_type, type) and issubclass(value_type, BaseModel):
            return _AnyKey(value_type)
    return None


class _AnyKey(dict):
    """The keys of a mapping keyed by free names (stream names): any key, each holding `value_type`."""

    def __init__(self, value_type: Any) -> None:
        super().__init__()
        self.value_type = value_type

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: Any) -> Any:
        return self.value_type


def _suggest(key: str, known: list[str]) -> str | None:
    """The known key nearest to `key` (case-insensitive), if any is close enough to be a typo."""
    lowered = {k.lower(): k for k in known}
    match = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _unknown(raw: dict, children: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    written = sorted(k for k in children if not ("_" in k and to_camel(k) in children))
    for key, value in raw.items():
        full = f"{path}.{key}" if path else str(key)
        if str(key) in children:
            nested = _child_keys(children[str(key)])
            if nested is not None and isinstance(value, dict):
                yield from _unknown(value, nested, full)
            continue  # a scalar, or a mapping whose keys the model itself validates
        near = _suggest(str(key), written)
        hint = f"did you mean {f'{path}.{near}' if path else near}?" if near else f"known keys here: {', '.join(written)}"
        yield full, f"unknown stack config key; {hint}"


def unknown_keys(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(full key path, message) for every key of `raw`, at any depth, that no config field reads.

    Derived from the StackConfig model (and ConnectionSettings for the credential keys), so a
    new field is known as soon as it is declared. Each message names the nearest valid key.
    """
    top = {**(_child_keys(StackConfig) or {}), **dict.fromkeys(CREDENTIAL_KEYS, str)}
    return list(_unknown(raw, top, ""))


def _written_key(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as the stack file writes it: fields camelCase, names and numbers as they are."""
    parts: list[str] = []
    annotation: Any = StackConfig
    for part in loc:
        annotation = _value_type(annotation)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            parts.append(field.alias or str(part) if field else str(part))
            annotation = field.annotation if field else None
        elif origin in (dict, tuple):
            parts.append(str(part))
            args = get_args(annotation)
            annotation = args[-1] if origin is dict else args[0] if args else None
        else:
            parts.append(to_camel(part) if isinstance(part, str) else str(part))
            annotation = None
    return ".".join(parts)


def _friendly(exc: ValidationError, prefix: str) -> ConfigError:
    lines = []
    first_key = prefix
    for i, err in enumerate(exc.errors()):
        loc = _written_key(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and (named := re.match(r"([a-z][^\s:]*): ", msg)):
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
    """Parse raw config values (already JSON-decoded) into a StackConfig, or raise ConfigError.

    Credential keys (CREDENTIAL_KEYS) are accepted and ignored here; any other key that no
    field reads fails with its full path and the nearest valid key.
    """
    if problems := unknown_keys(raw):
        lines = [f"{project}:{key}: {message}" for key, message in problems]
        raise ConfigError(f"{project}:{problems[0][0]}", "invalid stack config:\n  " + "\n  ".join(lines))
    raw = {k: v for k, v in raw.items() if k not in CREDENTIAL_KEYS}
    try:
        return StackConfig.model_validate(raw)
    except ValidationError as exc:
        raise _friendly(exc, project) from None
