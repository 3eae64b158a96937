"""The inputs each resource carries beside its spec, declared once per resource kind.

A stream or consumer resource registers its spec's fields plus a few inputs that
are not part of the server object: where the server is, the credentials, the
data-loss opt-in, and what the provider needs to move subjects or drain a durable.
Each is declared here once, with what the providers and the preview report do with
it; the resource's registered props, the outputs stored in the state, the keys
`diff()` compares, the inputs `read()` reports, the preview report's ignore list
and the stack fields the phase gate leaves out all derive from these declarations.

No Pulumi import: the preview report (the CLI) reads these declarations too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any


def _same(value: Any) -> Any:
    return value


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value or ()]


def _subject_lists(value: Any) -> dict[str, list[str]]:
    return {str(k): _strings(v) for k, v in dict(value or {}).items()}


@dataclass(frozen=True)
class Input:
    """One non-spec input of a resource.

    The state stores an input only when the provider needs it after the call that
    wrote it: `diff()` compares the old outputs with the new inputs, and `read()` and
    `delete()` get nothing but the old outputs. Every byte stored is rewritten on each
    step of a `pulumi up`, so an input no later call reads is not stored.
    """

    key: str
    #: The value when the props leave it out (a state written before the input existed).
    default: Any = None
    #: Normalises a value given in the props (the type it has in the state).
    convert: Callable[[Any], Any] = _same
    #: A change of it is a change of the resource: `diff()` reports it (so it is stored).
    diff: bool = False
    #: Stored in the state because `read()` or `delete()` needs it.
    stored: bool = False
    #: Registered as a secret, so the state keeps it encrypted.
    secret: bool = False
    #: The preview report lists a change of it as a changed input.
    reported: bool = True
    #: The StackConfig field it is taken from; the phase gate leaves that field out of
    #: what it verifies, so changing it does not rerun the rollout hook.
    stack_field: str | None = None

    @property
    def kept(self) -> bool:
        """In the state after create/update/read."""
        return self.diff or self.stored

    def value(self, props: Mapping[str, Any]) -> Any:
        raw = props.get(self.key, self.default)
        return None if raw is None else self.convert(raw)

    def at_default(self, value: Any) -> bool:
        """True when `value` reads the same as leaving the input out (never for a value not
        known yet, such as a Pulumi Output)."""
        try:
            return bool(self.value({self.key: value}) == self.value({}))
        except (TypeError, ValueError):
            return False


@dataclass(frozen=True)
class Inputs:
    """The non-spec inputs of one resource kind and the outputs it declares."""

    fields: tuple[Input, ...]
    #: Outputs the resource declares (registered as None, filled in by the provider).
    placeholders: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Input:
        for field in self.fields:
            if field.key == key:
                return field
        raise KeyError(key)

    def value(self, props: Mapping[str, Any], key: str) -> Any:
        """The input `key` of `props`, normalised, or its default."""
        return self[key].value(props)

    @cached_property
    def own_keys(self) -> frozenset[str]:
        """The keys of props that are not spec fields: these inputs, the declared outputs, the
        provider's own output (SEEN_KEY) and the SDK's pickled provider."""
        return frozenset({PROVIDER_KEY, SEEN_KEY, *self.placeholders, *(f.key for f in self.fields)})

    @property
    def diff_keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields if f.diff)

    def changed(self, olds: Mapping[str, Any], news: Mapping[str, Any],
                unknown: Callable[[Any], bool] = lambda _: False) -> list[str]:
        """The diff keys whose value differs (`unknown` values, not yet known in a preview, count as unchanged)."""
        return [f.key for f in self.fields
                if f.diff and not unknown(news.get(f.key)) and f.value(olds) != f.value(news)]

    def stored(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """What the state keeps of `props`, normalised."""
        return {f.key: f.value(props) for f in self.fields if f.kept}

    def view(self, outs: Mapping[str, Any]) -> dict[str, Any]:
        """The stored inputs of `outs`, for the inputs `read()` reports: as `register` sends
        them, so those at their default are left out."""
        return {f.key: outs[f.key] for f in self.fields if f.kept and f.key in outs and not f.at_default(outs[f.key])}

    def register(self, values: Mapping[str, Any], secret: Callable[[Any], Any]) -> dict[str, Any]:
        """The props a resource registers for `values` (each a declared key), with the
        secret ones wrapped by `secret` (pulumi.Output.secret), plus a None placeholder per
        declared output.

        An input at its default is left out: every call reads it back with `value()`, which
        fills the default in, and the SDK's cost per registered property grows faster than
        the stack (benchmarks/RESULTS-peer-compare.md).
        """
        unknown_keys = sorted(set(values) - {f.key for f in self.fields})
        if unknown_keys:
            raise KeyError(f"undeclared inputs: {', '.join(unknown_keys)}")
        props: dict[str, Any] = {}
        for key, value in values.items():
            field = self[key]
            if not field.at_default(value):
                props[key] = secret(value) if field.secret else value
        return {**props, **dict.fromkeys(self.placeholders)}

    def nested(self, spec_props: Mapping[str, Any], values: Mapping[str, Any],
               secret: Callable[[Any], Any], keep_on_top: Iterable[str] = ()) -> dict[str, Any]:
        """The props a stream or consumer registers: its spec's fields under SPEC_PROP, its
        plain non-spec inputs (those `register` keeps) under INPUTS_PROP, and the secret
        inputs, the declared outputs and the keys of `keep_on_top` at the top level.

        Three or four properties instead of up to a dozen: the SDK's cost per registered
        property grows faster than the stack (benchmarks/RESULTS-peer-compare.md). check()
        flattens the rest (`flatten`), so the state and every other call see flat props, as
        in a state written before. The engine matches two things by top-level key against
        the old, flat inputs: which checked inputs are secret, and the resource's
        `ignore_changes` paths, so the keys those name (`keep_on_top`) stay on top.
        """
        keep = set(keep_on_top)
        registered = self.register(values, secret)
        plain = {k: v for k, v in registered.items()
                 if k not in self.placeholders and not self[k].secret and k not in keep}
        top = {k: v for k, v in registered.items() if k not in plain}
        spec = {k: v for k, v in spec_props.items() if k not in keep}
        return {SPEC_PROP: spec, **({INPUTS_PROP: plain} if plain else {}), **top,
                **{k: v for k, v in spec_props.items() if k in keep}}

    def with_defaults(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """`props` with every input it leaves out at its default (as `value()` reads it)."""
        return {**{f.key: f.value({}) for f in self.fields if f.key not in props and f.default is not None},
                **props}

    def unreported(self) -> set[str]:
        return {f.key for f in self.fields if not f.reported} | set(self.placeholders)

    def stack_fields(self) -> set[str]:
        return {f.stack_field for f in self.fields if f.stack_field}


#: Where the SDK keeps a dynamic resource's pickled provider, in its inputs and outputs.
PROVIDER_KEY = "__provider"

#: An output only the provider writes: the digest of the server's config that the other outputs
#: were taken from (components.pulumi.base.seen_digest), so a read that finds the same config
#: reports the state as it is, without parsing it again.
SEEN_KEY = "seen"

#: The nested properties of a registered stream or consumer (`Inputs.nested`).
SPEC_PROP, INPUTS_PROP = "spec", "inputs"


def flatten(props: Mapping[str, Any]) -> dict[str, Any]:
    """`props` as registered by `Inputs.nested`, flat; flat props are returned as they are."""
    parts = [k for k in (SPEC_PROP, INPUTS_PROP) if isinstance(props.get(k), Mapping)]
    flat = {k: v for k, v in props.items() if k not in parts}
    for key in parts:
        flat.update(props[key])
    return flat


# -- shared by the resources --------------------------------------------------------------
SERVERS = Input("servers", default=(), convert=_strings, diff=True, stored=True)
CREDENTIALS = Input("credentials", default={}, convert=dict, diff=True, stored=True, secret=True)
ALLOW_DATA_LOSS = Input("allow_data_loss", default=False, convert=bool, diff=True, stored=True,
                        stack_field="allow_data_loss")
#: Set by check() on a create that adopts an existing object; shown in the preview, never stored.
ADOPTION = Input("adoption", reported=False)

# -- per resource -------------------------------------------------------------------------
STREAM_INPUTS = Inputs(
    fields=(
        SERVERS, CREDENTIALS, ALLOW_DATA_LOSS, ADOPTION,
        #: The streams this stream may take subjects from when it claims them (handover).
        Input("takeover", default=(), convert=_strings, diff=True),
        #: Seconds the provider keeps retrying a claim (then the give-back) across reconnects.
        Input("claim_retry_timeout", default=30.0, convert=float, reported=False, stack_field="claim_retry_timeout"),
        #: Subjects the stream must claim now although its state says it has them (the plan's
        #: `reclaim`); `diff()` reports a non-empty one as a change.
        Input("reclaim", default=(), convert=_strings),
        #: Per stream this one takes subjects from, the subjects that stream keeps as it releases
        #: them (the plan's `keeps`: orders.us.> when orders.> is released for orders.eu.>).
        Input("keeps", default={}, convert=_subject_lists, reported=False),
    ),
    placeholders=("stream_name",),
)

CONSUMER_INPUTS = Inputs(
    fields=(
        SERVERS, CREDENTIALS, ALLOW_DATA_LOSS, ADOPTION,
        #: The desired subjects of the consumer's stream, so check() catches a filter no subject
        #: of the stream covers before anything reaches the server; stored so that a refresh
        #: reports the inputs the program sends.
        Input("stream_subjects", default=(), convert=_strings, stored=True),
        #: Seconds delete() waits for the durable's pending messages to drain.
        Input("drain_timeout", default=30.0, convert=float, diff=True, stack_field="drain_timeout"),
    ),
    placeholders=("consumer_id",),
)

GATE_INPUTS = Inputs(
    fields=(
        Input("phase", convert=int, diff=True),
        #: The stack config the gate verifies against (what it does not verify left out).
        Input("stack", default={}, convert=dict, diff=True),
        Input("verify", default=True, convert=bool, diff=True, stack_field="verify"),
        #: The rollout hook of the phase, a shell command.
        Input("hook", default="", convert=str, diff=True, stack_field="rollout_hooks"),
        SERVERS,
        # Not compared (new credentials alone do not rerun the gate); stored so that a refresh,
        # which reports the stored inputs back, keeps them in the state's inputs.
        Input("credentials", default={}, convert=dict, stored=True, secret=True),
    ),
    placeholders=("checks", "warnings", "probes", "health"),
)

RESOURCES = (STREAM_INPUTS, CONSUMER_INPUTS, GATE_INPUTS)


def report_ignored(resources: Iterable[Inputs] = RESOURCES) -> frozenset[str]:
    """Input keys the preview report does not list as changes: the pickled provider, the
    declared outputs (a refresh copies their values into the inputs), the provider's own output
    and the inputs declared unreported."""
    return frozenset({PROVIDER_KEY, SEEN_KEY}.union(*(r.unreported() for r in resources)))
