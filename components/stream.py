"""JetStream streams: the desired-state model, its Pulumi dynamic provider, and the resource.

The model is the one vocabulary for config, state and diff: stack config is
parsed into it, the server's reported config is parsed back into it (server
defaults filled in the same way, `_nats.*` metadata dropped), and `diff()`
compares the two. Fields the server cannot change in place are declared once,
in `replace_reasons()`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi.dynamic as dyn
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components import lifeline
from components import resource_common as rc
from components.durations import Duration, format_duration, ns, parse_duration
from components.errors import (
    DataLossRefused,
    EventBusError,
    JetStreamAPIError,
    NatsConnectionError,
    StreamNotFound,
    SubjectOverlap,
    api_error,
)
from components.nats_client import ConnectionSettings, JetStream
from components.subjects import name_problem, subject_problem, subjects_overlap

lifeline.start_if_plugin()  # in the dynamic-provider process: exit when the engine is gone

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


#: Streams this stream may take subjects from when it claims them (see `hand_over`).
TAKEOVER = "takeover"
#: Input: seconds the provider keeps retrying a claim (then the give-back) across reconnects.
CLAIM_RETRY_TIMEOUT = "claim_retry_timeout"
DEFAULT_CLAIM_RETRY_TIMEOUT = 30.0

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
#: Input: subjects the stream must claim now although its state says it has them.
RECLAIM = "reclaim"


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


# -- live-server helpers ----------------------------------------------------------------
def stream_messages(js: JetStream, name: str) -> int:
    info = js.stream_info(name)
    return int(info["state"]["messages"]) if info else 0


def guard_data_loss(js: JetStream, name: str, allowed: bool, action: str, fields: list[str] | None = None) -> None:
    """Refuse to destroy a stream that holds messages unless the stack allows it by name."""
    if allowed:
        return
    messages = stream_messages(js, name)
    if messages:
        because = f" because {', '.join(fields)} cannot change in place" if fields else ""
        raise DataLossRefused(
            f"stream {name}: {action}{because} would destroy its {messages} stored messages. "
            f"Add {name!r} to the stack's allowDataLoss list to allow it, or keep the old value"
        )


#: Per-request timeout inside a hand-over: short, so a lost connection is retried
#: promptly (every request there is idempotent, so a retry after a lost reply is safe).
HAND_OVER_REQUEST_TIMEOUT = 2.0
#: Pause between attempts while the server is unreachable, and the connect timeout then.
RETRY_INTERVAL = 0.2
RECONNECT_TIMEOUT = 2.0
#: Server answers that mean "try again shortly", not "no".
TRANSIENT_ERR_CODES = frozenset({10008})  # JetStream temporarily unavailable (e.g. a leader election)


class ClaimFailed(EventBusError):
    """A stream could not claim subjects it took from other streams.

    `given_back` says whether the subjects are back on the streams that released them
    (True), or whether they may have no stream until the next `pulumi up` (False).
    """

    def __init__(self, message: str, *, subjects: tuple[str, ...], stream: str, owners: tuple[str, ...],
                 given_back: bool, err_code: int = 0) -> None:
        super().__init__(message)
        self.subjects, self.stream, self.owners = subjects, stream, owners
        self.given_back, self.err_code = given_back, err_code


@dataclass
class Release:
    """One stream's subjects released for a claim, and its config before, for the give-back."""

    owner: str
    before: dict
    subjects: tuple[str, ...]


def _transient(exc: Exception) -> bool:
    if isinstance(exc, NatsConnectionError):
        return True
    return isinstance(exc, JetStreamAPIError) and exc.err_code in TRANSIENT_ERR_CODES


def _pedantic(js: JetStream, body: dict) -> dict:
    return {**body, "pedantic": True} if js.api_level() >= 1 else dict(body)


def _request(js: JetStream, subject: str, body: dict | None, *, stream: str | None = None,
             timeout: float = HAND_OVER_REQUEST_TIMEOUT) -> dict:
    """A JetStream API request that fails as soon as the connection drops, not at its timeout.

    A request written into a connection that then breaks never gets its reply; waiting
    out the timeout would keep a released subject without a stream that much longer.
    """
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from components.nats_client import _LOOP

    nc = js.nc
    payload = json.dumps(body).encode() if body is not None else b""

    async def call() -> bytes:
        if not nc.is_connected:
            raise ConnectionResetError("not connected")
        task = asyncio.ensure_future(nc.request(subject, payload, timeout=timeout))
        while not task.done():
            await asyncio.wait([task], timeout=0.02)
            if not task.done() and not nc.is_connected:
                task.cancel()
                raise ConnectionResetError("connection lost while waiting for the reply")
        return task.result().data

    try:
        data = _LOOP.run(call(), timeout=timeout + 5)
    except (ConnectionResetError, NoRespondersError, NatsTimeout, asyncio.TimeoutError, TimeoutError) as exc:
        raise NatsConnectionError(f"JetStream request {subject} failed on {js.settings.describe()}: "
                                  f"{exc or type(exc).__name__}") from exc
    reply = json.loads(data)
    if "error" in reply:
        raise api_error(reply["error"], stream=stream)
    return reply


def _update(js: JetStream, config: dict) -> dict:
    name = config["name"]
    return _request(js, f"$JS.API.STREAM.UPDATE.{name}", _pedantic(js, config), stream=name)


def _info(js: JetStream, name: str) -> dict | None:
    try:
        return _request(js, f"$JS.API.STREAM.INFO.{name}", None, stream=name)
    except StreamNotFound:
        return None


def _names(js: JetStream, subject: str) -> list[str]:
    return list(_request(js, "$JS.API.STREAM.NAMES", {"subject": subject}).get("streams") or [])


def _owners(js: JetStream, name: str, subjects: tuple[str, ...], takeover: list[str]) -> dict[str, list[str]]:
    """Streams other than `name` owning any of `subjects`; one outside `takeover` is an error naming it."""
    owners: dict[str, list[str]] = {}
    for subject in subjects:
        for owner in _names(js, subject):
            if owner != name:
                owners.setdefault(owner, []).append(subject)
    for owner, wanted in sorted(owners.items()):
        if owner not in takeover:
            raise SubjectOverlap(
                f"subjects {', '.join(wanted)} are owned by stream {owner}, which this stack does not manage",
                err_code=10065,
                stream=name,
            )
    return owners


def hand_over(js: JetStream, name: str, subjects: tuple[str, ...], takeover: list[str],
              releases: list[Release] | None = None) -> list[Release]:
    """Release `subjects` from the streams in `takeover` that hold them, so `name` can claim them.

    Idempotent: a stream that already released them is left alone, so it can be retried
    after a lost connection. Each release is recorded in `releases` (and returned) before
    it is sent, so a give-back also covers a release whose reply was lost. The released
    stream records its last sequence (`eventbus.released.<subject>`). A subject held by
    a stream outside `takeover` is an error naming that stream.
    """
    releases = releases if releases is not None else []
    for owner in sorted(_owners(js, name, subjects, takeover)):
        info = _info(js, owner)
        if info is None:
            continue
        spec = StreamSpec.from_wire(info["config"])
        gone = tuple(s for s in spec.subjects if any(subjects_overlap(s, w) for w in subjects))
        keep = tuple(s for s in spec.subjects if s not in gone)
        if not any(r.owner == owner for r in releases):
            releases.append(Release(owner, info["config"], gone))
        last = int(info["state"]["last_seq"])
        managed = carried_metadata(info["config"], keep, released={s: last for s in gone})
        _update(js, spec.model_copy(update={"subjects": keep}).wire(managed))
    return releases


def _retrying(js: JetStream, deadline: float, step: Any) -> Any:
    """Run `step(js)` until it succeeds, a non-transient error, or `deadline` (then the last error)."""
    while True:
        try:
            return step(js)
        except EventBusError as exc:
            if not _transient(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(RETRY_INTERVAL)
        try:
            # A fresh client (the cached one is replaced once it has lost its server), with a
            # connect timeout short enough to keep within the retry budget.
            js = JetStream(js.settings.model_copy(update={"connect_timeout": RECONNECT_TIMEOUT}))
        except NatsConnectionError:
            if time.monotonic() >= deadline:
                raise


def _owned_by(js: JetStream, name: str, subjects: tuple[str, ...]) -> bool:
    return all(_names(js, subject) == [name] for subject in subjects)


def _give_back(js: JetStream, name: str, releases: list[Release], retry_timeout: float) -> str | None:
    """Put released subjects back where they were; None on success, else why not."""
    def step(js: JetStream) -> None:
        for release in releases:
            managed = {k: v for k, v in (release.before.get("metadata") or {}).items()
                       if k.startswith(MANAGED_METADATA)}
            try:
                _update(js, StreamSpec.from_wire(release.before).wire(managed))
            except SubjectOverlap:
                if not _owned_by(js, name, release.subjects):
                    raise
                # The claim did land (its reply was lost): nothing to give back.

    try:
        _retrying(js, time.monotonic() + retry_timeout, step)
    except EventBusError as exc:
        return str(exc)
    return None


def claim(js: JetStream, spec: StreamSpec, config: dict, takeover: list[str], retry_timeout: float) -> dict:
    """Release `spec.subjects` from their owners and claim them with `config`, back to back.

    Transient failures (lost connection, server restart, leader election) are retried for
    up to `retry_timeout` seconds; if the claim still fails, the subjects are given back to
    the streams that released them (retried as long again) and ClaimFailed names the
    subjects, both streams and the server's reason.
    """
    releases: list[Release] = []

    def step(js: JetStream) -> dict:
        hand_over(js, spec.name, spec.subjects, takeover, releases)
        return _update(js, config)

    try:
        return _retrying(js, time.monotonic() + retry_timeout, step)
    except EventBusError as exc:
        if not releases:
            raise  # nothing was released (e.g. an unmanaged stream owns a subject): nothing to undo
        failure = exc
    moved = tuple(sorted({s for r in releases for s in r.subjects}))
    owners = tuple(r.owner for r in releases)
    why = failure.description if isinstance(failure, JetStreamAPIError) else str(failure)
    code = failure.err_code if isinstance(failure, JetStreamAPIError) else 0
    head = (f"stream {spec.name} could not claim {', '.join(moved) or ', '.join(spec.subjects)} from "
            f"{', '.join(owners) or 'their streams'}: {why}" + (f" (err_code {code})" if code else ""))
    problem = _give_back(js, spec.name, releases, retry_timeout) if releases else None
    if problem is None:
        raise ClaimFailed(
            f"{head}. The subjects were given back to {', '.join(owners) or 'their streams'}, which still own them. "
            "Fix the cause and run `pulumi up` again",
            subjects=moved, stream=spec.name, owners=owners, given_back=True, err_code=code) from failure
    raise ClaimFailed(
        f"{head}. Giving them back failed too ({problem}): {', '.join(moved)} may have NO stream now. Run "
        "`pulumi up` again as soon as the server is reachable: it claims unowned subjects first",
        subjects=moved, stream=spec.name, owners=owners, given_back=False, err_code=code) from failure


def apply_stream(js: JetStream, spec: StreamSpec, info: dict | None, takeover: list[str],
                 retry_timeout: float) -> dict:
    """Bring stream `spec.name` to `spec` (created if `info` is None), taking its subjects over.

    When subjects must be taken from other streams, everything the server could refuse
    about this stream is applied first (a create owning no subjects, or an update keeping
    its current subjects), so the claim is only a change of subjects; the claim records
    this stream's last sequence for each gained subject in the same call. Returns the
    stream's info after the call.
    """
    current = StreamSpec.from_wire(info["config"]) if info else None
    owners = _owners(js, spec.name, spec.subjects, takeover)
    if not owners:
        # Nothing to take: one call, as before. Subjects that nobody owns (a deploy that died
        # between release and claim) are claimed with the stream's current config first.
        if info is None or current is None:
            return js.stream_create(spec.wire())
        gained = tuple(s for s in spec.subjects if s not in current.subjects)
        last = int(info["state"]["last_seq"])
        if gained and changed_fields(current.model_copy(update={"subjects": spec.subjects}), spec):
            staged = current.model_copy(update={"subjects": spec.subjects})
            info = js.stream_update(staged.wire(carried_metadata(info["config"], spec.subjects, {s: last for s in gained})))
            current = staged
        managed = carried_metadata(info["config"], spec.subjects, {s: last for s in gained})
        live_managed = {k: v for k, v in (info["config"].get("metadata") or {}).items() if k.startswith(MANAGED_METADATA)}
        if changed_fields(current, spec) or managed != live_managed:
            info = js.stream_update(spec.wire(managed))
        return info
    if info is None or current is None:
        info = js.stream_create(spec.model_copy(update={"subjects": ()}).wire())
        current = StreamSpec.from_wire(info["config"])
    else:
        staged = spec.model_copy(update={"subjects": current.subjects})
        if changed_fields(current, staged):
            info = js.stream_update(staged.wire(carried_metadata(info["config"], current.subjects)))
    last = int(info["state"]["last_seq"])
    claims = {s: last for s in spec.subjects if s not in current.subjects}
    return claim(js, spec, spec.wire(carried_metadata(info["config"], spec.subjects, claims)), takeover, retry_timeout)


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
        with rc.STREAM_WRITE_LOCK:
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
        with rc.STREAM_WRITE_LOCK:
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
