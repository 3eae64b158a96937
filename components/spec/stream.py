"""A stream's desired state: the model config, state and diff share, and what the server cannot change in place.

Each field declares its wire name, unit and in-place rule next to it (`components.spec.fields`);
`wire`, `from_wire`, `props` and `replace_reasons` derive from that. The server's reported
config is parsed back into the same model (server defaults filled in the same way, `_nats.*`
metadata dropped), so a diff compares like with like.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from components.spec import fields
from components.spec.checked import StreamName
from components.spec.durations import ns, parse_duration
from components.spec.fields import (
    CreateOnly,
    Duration,
    Fixed,
    OneWay,
    When,
    Wire,
    WireModel,
    metadata_without,
    subject_list,
)
from components.spec.fields import changed_fields as changed_fields

#: The filter of the self-source that lets a stream own no subjects at all: without
#: subjects, sources or mirror the server gives a stream its own name as subject.
RETIRED_FILTER = "_retired.none"


def is_retired_marker(stream: str | None, source: dict) -> bool:
    """True for the self-source that makes `stream` own no subjects."""
    return source.get("name") == stream and source.get("filter_subject") == RETIRED_FILTER


def stored_subjects(config: dict) -> list[str]:
    """The subjects a stream really owns, from its server config: the retired marker means none."""
    if any(is_retired_marker(config.get("name"), s) for s in config.get("sources") or []):
        return []
    return list(config.get("subjects") or [])


#: Stream metadata this tool writes for itself. It lives on the server only: the spec
#: drops it (so it is never drift) and every update carries it over (see `carried_metadata`).
MANAGED_METADATA = "eventbus."
#: `eventbus.claimed.<subject>`: the stream's last sequence just before it claimed the
#: subject, written by the claim itself, so a durable created later starts after it.
CLAIMED = "eventbus.claimed."
#: `eventbus.released.<subject>`: the stream's last sequence when the tool released the
#: subject; anything stored under it after that came from an out-of-band change.
RELEASED = "eventbus.released."
#: `eventbus.drained.<durable>`: how far that durable had acknowledged when the tool removed it.
DRAINED = "eventbus.drained."

def recorded(config: dict, prefix: str) -> dict[str, int]:
    """subject -> sequence for the `prefix` (CLAIMED or RELEASED) keys of a server config."""
    out = {}
    for key, value in (config.get("metadata") or {}).items():
        if key.startswith(prefix):
            try:
                out[key[len(prefix):]] = int(value)
            except ValueError:
                continue  # not ours to interpret
    return out


def carried_metadata(config: dict | None, subjects: tuple[str, ...], claimed: dict[str, int] | None = None,
                     released: dict[str, int] | None = None) -> dict[str, str]:
    """The managed metadata a stream keeps when it is updated to own `subjects`.

    A claim position lasts while the stream owns the subject; a release position lasts
    until the stream claims the subject again (the first release is kept: messages an
    out-of-band change put there since then have no durable). `claimed`/`released` add
    positions for this update.
    """
    out: dict[str, str] = {k: v for k, v in ((config or {}).get("metadata") or {}).items()
                           if k.startswith(MANAGED_METADATA) and not k.startswith((CLAIMED, RELEASED))}
    for subject, seq in recorded(config or {}, CLAIMED).items():
        if subject in subjects:
            out[CLAIMED + subject] = str(seq)
    for subject, seq in recorded(config or {}, RELEASED).items():
        if subject not in subjects:
            out[RELEASED + subject] = str(seq)
    for subject, seq in (released or {}).items():
        out.setdefault(RELEASED + subject, str(seq))
        out.pop(CLAIMED + subject, None)
    for subject, seq in (claimed or {}).items():
        out[CLAIMED + subject] = str(seq)
        out.pop(RELEASED + subject, None)
    return out


class Source(WireModel):
    """A stream to copy messages from (`sources`) or to mirror (`mirror`)."""

    name: str
    filter_subject: str | None = None
    opt_start_seq: int | None = Field(default=None, ge=1)
    opt_start_time: str | None = None

    def wire(self) -> dict:
        return self.wire_fields()


class Placement(WireModel):
    cluster: str | None = None
    tags: tuple[str, ...] = ()


class SubjectTransform(WireModel):
    """Rewrites the subject of each message as it is stored (e.g. `orders.>` -> `legacy.orders.>`)."""

    source: Annotated[str, Wire("src")]
    destination: Annotated[str, Wire("dest")]


class RePublish(WireModel):
    """Publishes each stored message again, on `destination` (core NATS, no ack)."""

    source: Annotated[str, Wire("src")] = ">"
    destination: Annotated[str, Wire("dest")]
    headers_only: bool = False


def _unlimited(value: int) -> int:
    if value == 0 or value < -1:
        raise ValueError("use -1 for unlimited or a positive number")
    return value


#: The reason the server gives (10052) for a flag that cannot be turned back off.
_ONE_WAY = "{} cannot be turned back off once set (10052)"


class StreamSpec(WireModel):
    """A stream's desired config, in the units people write. Every field the tool manages.

    Each field declares its wire name, unit and in-place rule (see `components.spec.fields`).
    """

    name: Annotated[StreamName, Fixed("a stream cannot be renamed")] = Field(
        description="Stream name; cannot change (a new name is a new stream)")
    subjects: Annotated[tuple[str, ...], subject_list("subjects {a!r} and {b!r} overlap; keep only the wider one")] = Field(
        default=(), description="Subjects the stream owns; empty means none at all")
    description: str = ""
    retention: Annotated[Literal["limits", "interest", "workqueue"], When(
        "retention cannot change to or from workqueue (10052)", lambda a, b: "workqueue" in (a, b))] = "limits"
    storage: Annotated[Literal["file", "memory"], Fixed("storage type cannot change (10052)")] = "file"
    discard: Literal["old", "new"] = "old"
    discard_new_per_subject: bool = Field(default=False, description="Refuse new messages per subject at max_msgs_per_subject; needs discard new")
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: Duration = Field(default="0", description='Message age limit, e.g. "48h"; "0" keeps forever')
    max_msg_size: int = -1
    max_msgs_per_subject: int = -1
    max_consumers: int = -1
    duplicate_window: Duration = Field(default="2m", description="De-duplication window for Nats-Msg-Id")
    replicas: Annotated[int, Wire("num_replicas")] = Field(default=1, ge=1, le=5, description="Copies kept in a cluster: 1 to 5")
    placement: Placement | None = None
    compression: Literal["s2", "none"] = "none"
    metadata: Annotated[dict[str, str], metadata_without("_nats.", MANAGED_METADATA)] = Field(default_factory=dict)
    allow_direct: bool = False
    allow_rollup_hdrs: bool = False
    deny_delete: Annotated[bool, OneWay(_ONE_WAY.format("deny_delete"))] = False
    deny_purge: Annotated[bool, OneWay(_ONE_WAY.format("deny_purge"))] = False
    sealed: Annotated[bool, OneWay(_ONE_WAY.format("sealed"))] = False
    first_seq: Annotated[int, CreateOnly("first_seq is honoured only when the stream is created")] = Field(default=0, ge=0)
    sources: tuple[Source, ...] = ()
    mirror: Annotated[Source | None, Fixed("a mirror cannot be added or changed (10055)")] = None
    subject_transform: SubjectTransform | None = Field(default=None, description="Rewrite subjects as they are stored")
    republish: RePublish | None = Field(default=None, description="Publish each stored message again on another subject")
    allow_msg_ttl: Annotated[bool, Wire(api_level=1), OneWay("message TTLs cannot be disabled once allowed (10052)")] = Field(
        default=False, description="Honour the per-message Nats-TTL header")
    subject_delete_marker_ttl: Annotated[Duration, Wire(api_level=1)] = Field(
        default="0", description="Leave a delete marker this long when max_age removes a subject's last message; needs allow_msg_ttl and allow_rollup_hdrs")
    allow_msg_counter: Annotated[bool, Wire(api_level=2), Fixed("the message counter setting cannot change (10052)")] = Field(
        default=False, description="A counter stream (Nats-Incr); limits retention, discard old, no TTLs")
    allow_atomic: Annotated[bool, Wire(api_level=2)] = Field(default=False, description="Allow atomic batch publishing")

    # -- validation (check) ------------------------------------------------------
    @field_validator("compression", mode="before")
    @classmethod
    def _compression(cls, value: object) -> object:
        # The seeds write a boolean; the server takes "s2" or "none".
        if isinstance(value, bool):
            return "s2" if value else "none"
        return value

    @field_validator("max_msgs", "max_bytes", "max_msg_size", "max_msgs_per_subject", "max_consumers")
    @classmethod
    def _limits(cls, value: int) -> int:
        return _unlimited(value)

    @model_validator(mode="before")
    @classmethod
    def _sealed_means_frozen(cls, data: Any) -> Any:
        # Sealing makes the server set these (even in pedantic mode): say so up front.
        if isinstance(data, dict) and data.get("sealed"):
            data = {**data, "deny_delete": True, "deny_purge": True, "discard": "new", "max_age": "0"}
            data.pop("denyDelete", None), data.pop("denyPurge", None), data.pop("maxAge", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _default_duplicate_window(cls, data: Any) -> Any:
        # The server's default window is 2m, or max_age when that is shorter.
        if isinstance(data, dict) and "duplicate_window" not in data and "duplicateWindow" not in data:
            age = data.get("max_age", data.get("maxAge"))
            try:
                shorter = age not in (None, "0", 0) and 0 < parse_duration(age) < parse_duration("2m")
            except ValueError:
                return data  # the max_age field reports it
            if shorter:
                data = {**data, "duplicate_window": age}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> StreamSpec:
        if ns(self.max_age) and ns(self.duplicate_window) > ns(self.max_age):
            raise ValueError(
                f"duplicate_window {self.duplicate_window} is longer than max_age {self.max_age}; "
                "make it at most max_age"
            )
        if self.mirror and (self.subjects or self.sources):
            raise ValueError("a mirror stream takes no subjects and no sources; drop one of them")
        self._check_server_rules()
        return self

    def _check_server_rules(self) -> None:
        """The server's cross-field rules for the fields it refuses in combination (10052)."""
        if self.discard_new_per_subject and (self.discard != "new" or self.max_msgs_per_subject < 1):
            raise ValueError("discard_new_per_subject needs discard new and max_msgs_per_subject above 0")
        if ns(self.subject_delete_marker_ttl):
            if ns(self.subject_delete_marker_ttl) < ns("1s"):
                raise ValueError("subject_delete_marker_ttl must be at least 1s")
            if not (self.allow_msg_ttl and self.allow_rollup_hdrs):
                raise ValueError("subject_delete_marker_ttl needs allow_msg_ttl and allow_rollup_hdrs")
        if self.allow_rollup_hdrs and self.deny_purge and not self.sealed:
            raise ValueError("allow_rollup_hdrs needs purges allowed; drop deny_purge or allow_rollup_hdrs")
        if self.allow_msg_counter and (self.discard == "new" or self.allow_msg_ttl or self.retention != "limits"):
            raise ValueError("allow_msg_counter takes limits retention and discard old, without allow_msg_ttl")
        if self.mirror and (self.allow_msg_counter or self.allow_atomic or ns(self.subject_delete_marker_ttl)):
            raise ValueError("a mirror stream takes no allow_msg_counter, allow_atomic or subject_delete_marker_ttl")

    # -- wire format ---------------------------------------------------------------
    @property
    def retired(self) -> bool:
        """True when the stream owns no subjects (and so needs the self-source marker)."""
        return not self.subjects and not self.sources and self.mirror is None

    def wire(self, managed: dict[str, str] | None = None) -> dict:
        """The config the JetStream API takes: wire names, durations in nanoseconds.

        `managed` is this tool's metadata to keep on the server (see `carried_metadata`).
        A stream that owns nothing gets the self-source marker and no duplicate window
        (the server drops it while the stream owns nothing).
        """
        cfg = self.wire_fields()
        if self.retired:
            cfg.pop("duplicate_window", None)
            cfg["sources"] = [*cfg.get("sources", []), {"name": self.name, "filter_subject": RETIRED_FILTER}]
        if self.metadata or managed:
            cfg["metadata"] = {**self.metadata, **(managed or {})}
        return cfg

    @classmethod
    def from_wire(cls, config: dict) -> StreamSpec:
        """The spec a server-reported config amounts to (defaults, 0 limits and the marker normalised)."""
        data = cls.fields_from_wire(config)
        sources = [s for s in config.get("sources") or [] if not is_retired_marker(config["name"], s)]
        data["subjects"] = stored_subjects(config)
        data["sources"] = [Source.fields_from_wire(s) for s in sources]
        if "duplicate_window" not in config and len(sources) != len(config.get("sources") or []):
            data["duplicate_window"] = "2m"  # the server drops it while the stream owns nothing
        return cls.model_validate(data)


def replace_reasons(old: StreamSpec, new: StreamSpec) -> dict[str, str]:
    """Fields whose change needs the stream deleted and created again, with the server's reason."""
    return fields.replace_reasons(old, new)
