"""Each spec field's contract with the server, declared once, next to the field.

A field carries its declarations as `Annotated` markers:

    replicas: Annotated[int, Wire("num_replicas")] = 1
    storage: Annotated[Literal["file", "memory"], Fixed("storage type cannot change (10052)")] = "file"

- `Wire(name, api_level)`: the field's name in the JetStream API when it differs from
  the field's own, and the JetStream API level the server needs for it.
- The unit comes with the type: a `Duration` is nanoseconds on the wire, a nested
  `WireModel` is its own wire dict, anything else travels as it is.
- One rule for what the server cannot change in place: `Fixed` (any change),
  `OneWay` (can be set, never unset), `CreateOnly` (honoured only when the object is
  created), `When` (a change of the kind its test names). No rule: updated in place.

`WireModel.wire_fields()`, `WireModel.fields_from_wire()`, `WireModel.props()` and
`replace_reasons()` derive from those markers; a spec adds only its special wire cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from components.spec import checked, durations
from components.spec.subjects import subject_problem, subjects_overlap


@dataclass(frozen=True)
class Wire:
    """The field's wire name (None: the field's own) and the API level it needs (0: any server)."""

    name: str | None = None
    api_level: int = 0


@dataclass(frozen=True)
class Nanoseconds:
    """Unit marker: the value is a human duration in the spec and nanoseconds on the wire."""


#: A duration field: "48h" in config and state, nanoseconds on the wire.
Duration = Annotated[checked.Duration, Nanoseconds()]


@dataclass(frozen=True)
class Rule:
    """What the server does with a change of this field on an existing object."""

    reason: str

    def replaces(self, old: Any, new: Any) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(Rule):
    """Any change needs the object deleted and created again."""

    def replaces(self, old: Any, new: Any) -> bool:
        return bool(old != new)


@dataclass(frozen=True)
class OneWay(Rule):
    """Can be turned on in place, never back off."""

    def replaces(self, old: Any, new: Any) -> bool:
        return bool(old) and not new


@dataclass(frozen=True)
class CreateOnly(Rule):
    """Honoured only at create: the server takes, then ignores, a new value in place."""

    def replaces(self, old: Any, new: Any) -> bool:
        return old != new and bool(new)


@dataclass(frozen=True)
class When(Rule):
    """A change replaces when `test(old, new)` says so (e.g. to or from workqueue)."""

    test: Callable[[Any, Any], bool]

    def replaces(self, old: Any, new: Any) -> bool:
        return old != new and self.test(old, new)


def _marker(info: FieldInfo, kind: type) -> Any:
    return next((m for m in info.metadata if isinstance(m, kind)), None)


def wire_name(info: FieldInfo, name: str) -> str:
    wire = _marker(info, Wire)
    return wire.name if wire and wire.name else name


def _empty(value: Any) -> bool:
    """A value the server reads the same as a missing field (its zero value)."""
    if value is None or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, (str, list, tuple, dict)) and not value


def _parts(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """(the type with Annotated and Optional peeled off, the Annotated metadata found on the way)."""
    metadata: tuple[Any, ...] = ()
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extra = get_args(annotation)
            metadata += tuple(extra)
        elif get_origin(annotation) in (Union, UnionType):
            options = [a for a in get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation, metadata
            annotation = options[0]
        else:
            return annotation, metadata


def _is_ns(metadata: tuple[Any, ...]) -> bool:
    return any(isinstance(m, Nanoseconds) for m in metadata)


def _encode(value: Any, annotation: Any, metadata: tuple[Any, ...]) -> Any:
    base, more = _parts(annotation)
    metadata += more
    if value is None:
        return None
    if _is_ns(metadata):
        return durations.ns(value)
    if isinstance(value, WireModel):
        return value.wire_fields()
    if isinstance(value, tuple):
        (item, *_rest) = get_args(base) or (Any,)
        return [_encode(v, item, ()) for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


def _decode(raw: Any, annotation: Any, metadata: tuple[Any, ...]) -> Any:
    base, more = _parts(annotation)
    metadata += more
    if _is_ns(metadata):
        return durations.format_duration(int(raw))
    if isinstance(base, type) and issubclass(base, WireModel) and isinstance(raw, Mapping):
        return base.fields_from_wire(raw) or None
    if get_origin(base) is tuple and isinstance(raw, list):
        (item, *_rest) = get_args(base) or (Any,)
        return [_decode(v, item, ()) for v in raw]
    return raw


class WireModel(BaseModel):
    """A spec model whose wire format derives from its field declarations (see the module doc)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    def wire_fields(self) -> dict[str, Any]:
        """Every field under its wire name, in wire units; empty values are left out, since the
        server reads a missing field as the same zero value (and older servers know fewer fields)."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = _encode(getattr(self, name), info.annotation, tuple(info.metadata))
            if not _empty(value):
                out[wire_name(info, name)] = value
        return out

    @classmethod
    def fields_from_wire(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The model's fields in a server-reported config, in spec units. A missing or empty
        (zero) value is left out, so the model's default applies, as on the server."""
        data: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            raw = config.get(wire_name(info, name))
            if not _empty(raw):
                data[name] = _decode(raw, info.annotation, tuple(info.metadata))
        return data

    @classmethod
    def field_from_wire(cls, name: str, config: Mapping[str, Any]) -> Any:
        """One field of a server-reported config, in spec units (its default when absent or zero)."""
        info = cls.model_fields[name]
        raw = config.get(wire_name(info, name))
        if _empty(raw):
            return info.get_default(call_default_factory=True)
        return _decode(raw, info.annotation, tuple(info.metadata))

    def props(self, *, full: bool = False) -> dict[str, Any]:
        """The spec as flat Pulumi properties (snake_case, human units).

        Inputs carry only what differs from the defaults (every property costs the SDK
        an Output per resource, and a preview of 1,000 resources feels it); outputs are
        `full`. The model fills the defaults back in on both sides of a diff.
        """
        return self.model_dump(mode="json", exclude_defaults=not full)


def replace_reasons(old: WireModel, new: WireModel) -> dict[str, str]:
    """Fields whose change needs the object deleted and created again, with the server's reason."""
    reasons: dict[str, str] = {}
    for name, info in type(new).model_fields.items():
        rule = _marker(info, Rule)
        if rule is not None and rule.replaces(getattr(old, name), getattr(new, name)):
            reasons[name] = rule.reason
    return reasons


def required_api_levels(spec: WireModel) -> dict[str, int]:
    """field -> the JetStream API level it needs, for each field the spec sets away from its default."""
    levels: dict[str, int] = {}
    for name, info in type(spec).model_fields.items():
        wire = _marker(info, Wire)
        if wire and wire.api_level and getattr(spec, name) != info.get_default(call_default_factory=True):
            levels[name] = wire.api_level
    return levels


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


def subject_list(overlap: str, *, one: bool = False) -> BeforeValidator:
    """A validator for a list of subjects: each valid, no two overlapping (`overlap` names the
    fix, formatted with the pair as {a!r}, {b!r}); with `one`, a lone string is a list of one."""

    def check(value: object) -> object:
        if one and isinstance(value, str):
            value = (value,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            return value  # the type check reports it
        for subject in value:
            if problem := subject_problem(subject):
                raise ValueError(problem)
        for i, a in enumerate(value):
            for b in value[i + 1 :]:
                if subjects_overlap(a, b):
                    raise ValueError(overlap.format(a=a, b=b))
        return tuple(sorted(value))

    return BeforeValidator(check)


def metadata_without(*prefixes: str) -> AfterValidator:
    """Metadata with the keys under `prefixes` dropped (the server's own, this tool's): they are not config."""
    return AfterValidator(lambda value: {k: v for k, v in value.items() if not k.startswith(prefixes)})
