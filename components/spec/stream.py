"""A stream's desired state: the model config, state and diff share, and what the server cannot change in place.

The server's reported config is parsed back into the same model (server defaults
filled in the same way, `_nats.*` metadata dropped), so a diff compares like with like.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components.spec.durations import Duration, format_duration, ns, parse_duration
from components.spec.subjects import name_problem, subject_problem, subjects_overlap

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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Source(_Model):
    """A stream to copy messages from (`sources`) or to mirror (`mirror`)."""

    name: str
    filter_subject: str | None = None
    opt_start_seq: int | None = Field(default=None, ge=1)
    opt_start_time: str | None = None

    def wire(self) -> dict:
        return self.model_dump(exclude_none=True)


class Placement(_Model):
    cluster: str | None = None
    tags: tuple[str, ...] = ()


def _unlimited(value: int) -> int:
    if value == 0 or value < -1:
        raise ValueError("use -1 for unlimited or a positive number")
    return value


class StreamSpec(_Model):
    """A stream's desired config, in the units people write. Every field the tool manages."""

    name: str = Field(description="Stream name; cannot change (a new name is a new stream)")
    subjects: tuple[str, ...] = Field(default=(), description="Subjects the stream owns; empty means none at all")
    description: str = ""
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    discard: Literal["old", "new"] = "old"
    discard_new_per_subject: bool = False
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: Duration = Field(default="0", description='Message age limit, e.g. "48h"; "0" keeps forever')
    max_msg_size: int = -1
    max_msgs_per_subject: int = -1
    max_consumers: int = -1
    duplicate_window: Duration = Field(default="2m", description="De-duplication window for Nats-Msg-Id")
    replicas: int = Field(default=1, ge=1, le=5, description="Copies kept in a cluster: 1 to 5")
    placement: Placement | None = None
    compression: Literal["s2", "none"] = "none"
    metadata: dict[str, str] = Field(default_factory=dict)
    allow_direct: bool = False
    allow_rollup_hdrs: bool = False
    deny_delete: bool = False
    deny_purge: bool = False
    sealed: bool = False
    first_seq: int = Field(default=0, ge=0)
    sources: tuple[Source, ...] = ()
    mirror: Source | None = None

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

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if problem := name_problem(value, "stream"):
            raise ValueError(problem)
        return value

    @field_validator("subjects", mode="after")
    @classmethod
    def _subjects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for subject in value:
            if problem := subject_problem(subject):
                raise ValueError(problem)
        for i, a in enumerate(value):
            for b in value[i + 1 :]:
                if subjects_overlap(a, b):
                    raise ValueError(f"subjects {a!r} and {b!r} overlap; keep only the wider one")
        return tuple(sorted(value))

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        # The server's own `_nats.*` keys and this tool's positions are not config.
        return {k: v for k, v in value.items() if not k.startswith(("_nats.", MANAGED_METADATA))}

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
        return self

    # -- wire format ---------------------------------------------------------------
    @property
    def retired(self) -> bool:
        """True when the stream owns no subjects (and so needs the self-source marker)."""
        return not self.subjects and not self.sources and self.mirror is None

    def wire(self, managed: dict[str, str] | None = None) -> dict:
        """The config the JetStream API takes: durations in nanoseconds, every field explicit.

        `managed` is this tool's metadata to keep on the server (see `carried_metadata`).
        """
        cfg: dict[str, Any] = {
            "name": self.name,
            "subjects": list(self.subjects),
            "retention": self.retention,
            "storage": self.storage,
            "discard": self.discard,
            "max_msgs": self.max_msgs,
            "max_bytes": self.max_bytes,
            "max_age": ns(self.max_age),
            "max_msg_size": self.max_msg_size,
            "max_msgs_per_subject": self.max_msgs_per_subject,
            "max_consumers": self.max_consumers,
            "num_replicas": self.replicas,
            "compression": self.compression,
            "allow_direct": self.allow_direct,
            "allow_rollup_hdrs": self.allow_rollup_hdrs,
            "deny_delete": self.deny_delete,
            "deny_purge": self.deny_purge,
            "sealed": self.sealed,
        }
        if not self.retired:
            cfg["duplicate_window"] = ns(self.duplicate_window)
        if self.description:
            cfg["description"] = self.description
        if self.discard_new_per_subject:
            cfg["discard_new_per_subject"] = True
        if self.metadata or managed:
            cfg["metadata"] = {**self.metadata, **(managed or {})}
        if self.placement:
            cfg["placement"] = self.placement.model_dump(exclude_none=True, exclude_defaults=True)
        if self.first_seq:
            cfg["first_seq"] = self.first_seq
        sources = [s.wire() for s in self.sources]
        if self.retired:
            sources.append({"name": self.name, "filter_subject": RETIRED_FILTER})
        if sources:
            cfg["sources"] = sources
        if self.mirror:
            cfg["mirror"] = self.mirror.wire()
        return cfg

    @classmethod
    def from_wire(cls, config: dict) -> StreamSpec:
        """The spec a server-reported config amounts to (defaults and marker normalised)."""
        sources = [s for s in config.get("sources") or [] if not is_retired_marker(config["name"], s)]
        retired = len(sources) != len(config.get("sources") or [])
        data: dict[str, Any] = {
            "name": config["name"],
            "subjects": stored_subjects(config),
            "description": config.get("description") or "",
            "retention": config.get("retention", "limits"),
            "storage": config.get("storage", "file"),
            "discard": config.get("discard", "old"),
            "discard_new_per_subject": bool(config.get("discard_new_per_subject")),
            "max_msgs": config.get("max_msgs", -1),
            "max_bytes": config.get("max_bytes", -1),
            "max_age": format_duration(int(config.get("max_age", 0))),
            "max_msg_size": config.get("max_msg_size", -1),
            "max_msgs_per_subject": config.get("max_msgs_per_subject", -1),
            "max_consumers": config.get("max_consumers", -1),
            "replicas": config.get("num_replicas") or 1,
            "compression": config.get("compression") or "none",
            "metadata": config.get("metadata") or {},
            "allow_direct": bool(config.get("allow_direct")),
            "allow_rollup_hdrs": bool(config.get("allow_rollup_hdrs")),
            "deny_delete": bool(config.get("deny_delete")),
            "deny_purge": bool(config.get("deny_purge")),
            "sealed": bool(config.get("sealed")),
            "first_seq": config.get("first_seq") or 0,
            "sources": [_source(s) for s in sources],
            "mirror": _source(config["mirror"]) if config.get("mirror") else None,
        }
        if "duplicate_window" in config:
            data["duplicate_window"] = format_duration(int(config["duplicate_window"]))
        elif retired:
            data["duplicate_window"] = "2m"  # the server drops it while the stream owns nothing
        placement = config.get("placement") or {}
        if placement.get("cluster") or placement.get("tags"):
            data["placement"] = {"cluster": placement.get("cluster") or None, "tags": placement.get("tags") or []}
        return cls.model_validate(_lenient(data))

    def props(self, *, full: bool = False) -> dict[str, Any]:
        """The spec as flat Pulumi properties (snake_case, human units).

        Inputs carry only what differs from the defaults (every property costs the SDK
        an Output per resource, and a preview of 1,000 resources feels it); outputs are
        `full`. The model fills the defaults back in on both sides of a diff.
        """
        return self.model_dump(mode="json", exclude_defaults=not full)


def _source(raw: dict) -> dict:
    keep = {k: raw.get(k) for k in ("name", "filter_subject", "opt_start_seq", "opt_start_time")}
    return {k: v for k, v in keep.items() if v}


def _lenient(data: dict) -> dict:
    """Server-reported values outside what config accepts (e.g. 0 limits) are kept as they are."""
    for key in ("max_msgs", "max_bytes", "max_msg_size", "max_msgs_per_subject", "max_consumers"):
        if data[key] == 0:
            data[key] = -1
    return data


# -- what the server cannot change in place ------------------------------------------
def replace_reasons(old: StreamSpec, new: StreamSpec) -> dict[str, str]:
    """Fields whose change needs the stream deleted and created again, with the server's reason."""
    reasons: dict[str, str] = {}
    if old.name != new.name:
        reasons["name"] = "a stream cannot be renamed"
    if old.storage != new.storage:
        reasons["storage"] = "storage type cannot change (10052)"
    if old.retention != new.retention and "workqueue" in (old.retention, new.retention):
        reasons["retention"] = "retention cannot change to or from workqueue (10052)"
    if old.mirror != new.mirror:
        reasons["mirror"] = "a mirror cannot be added or changed (10055)"
    if old.first_seq != new.first_seq and new.first_seq:
        reasons["first_seq"] = "first_seq is honoured only when the stream is created"
    for flag in ("deny_delete", "deny_purge", "sealed"):
        if getattr(old, flag) and not getattr(new, flag):
            reasons[flag] = f"{flag} cannot be turned back off once set (10052)"
    return reasons


def changed_fields(old: BaseModel, new: BaseModel) -> list[str]:
    """Top-level fields that differ between two specs, sorted by name.

    Lists compare in order: for `backoff` (retry n waits the n-th delay) and `sources`
    the order is the meaning, so a reordering is a change. A field whose value is a
    nested model or list differs when any part of it does.
    """
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    if a == b:
        return []
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


