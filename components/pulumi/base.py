"""The provider base: check/diff/create/update/read/delete of one server object described by a spec.

`SpecProvider` holds what the stream and consumer providers share: parsing the props
into the spec, validation failures that name the field, the adoption note a preview
shows when an object of that name exists already, the data-loss opt-ins (the
resource's own flag and the current stack's `allowDataLoss`), the diff keys and
stored outputs derived from the resource's non-spec inputs (components.pulumi.inputs),
and the drift-honest read. A subclass supplies only hooks: how to read, write and
remove the object on the server, and its own checks.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import pulumi
import pulumi.dynamic as dyn

from components.jetstream.errors import EventBusError
from components.migration import policy
from components.migration.lock import STREAM_WRITE_LOCK
from components.pulumi import lifeline
from components.pulumi.inputs import ADOPTION, ALLOW_DATA_LOSS, CREDENTIALS, SEEN_KEY, SERVERS, Inputs, flatten
from components.pulumi.snapshot import SNAPSHOT
from components.spec.project import PROJECT

if TYPE_CHECKING:
    # The client (nats-py) loads only when a call talks to the server, and the specs (pydantic)
    # only when a call parses one: a check and a diff of unchanged inputs need neither.
    from pydantic import ValidationError

    from components.jetstream.client import JetStream
    from components.jetstream.settings import ConnectionSettings
    from components.spec.consumer import ConsumerSpec
    from components.spec.stream import StreamSpec

#: The stack config key (project namespace) naming objects that may lose data.
ALLOW_DATA_LOSS_KEY = f"{PROJECT}:{policy.OPT_IN}"

__all__ = ["ALLOW_DATA_LOSS_KEY", "STREAM_WRITE_LOCK", "SpecProvider", "connection_values", "jetstream", "register",
           "seen_digest"]

lifeline.start_if_plugin()  # in the dynamic-provider process: exit when the engine is gone

Spec = TypeVar("Spec", "StreamSpec", "ConsumerSpec")


def connection_values(settings: ConnectionSettings) -> dict[str, Any]:
    """The `servers` input (plain) and the `credentials` input (a secret) of a resource."""
    return {SERVERS.key: list(settings.servers), CREDENTIALS.key: settings.credentials()}


def register(spec_props: dict[str, Any], inputs: Inputs, values: dict[str, Any],
             opts: pulumi.ResourceOptions | None) -> dict[str, Any]:
    """The props a stream or consumer registers: its spec and its non-spec inputs, nested
    (`Inputs.nested`; check() flattens them), the secret ones wrapped, and the fields its
    `ignore_changes` names on top, where the engine looks for them."""
    ignored = (opts.ignore_changes if opts else None) or []
    return inputs.nested(spec_props, values, pulumi.Output.secret, keep_on_top=(p.split(".")[0] for p in ignored))


def jetstream(props: dict[str, Any]) -> JetStream:
    from components.jetstream.client import JetStream
    from components.jetstream.settings import ConnectionSettings

    return JetStream(ConnectionSettings.from_props(SERVERS.value(props), props.get(CREDENTIALS.key)))


#: The modules whose code turns the server's config into a resource's outputs (spec_of, outputs),
#: relative to the components package: a state another version of them wrote is parsed again.
CONVERSION_SOURCES = ("spec/*.py", "pulumi/base.py", "pulumi/inputs.py", "pulumi/stream.py", "pulumi/consumer.py")


@functools.cache
def _conversion_digest() -> bytes:
    """The digest of CONVERSION_SOURCES as this process runs them, and of the installed pydantic's
    version (which pins pydantic-core's), found without importing it; random when they cannot be
    read: then no state is trusted."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    try:
        pydantic = importlib.util.find_spec("pydantic")
        if pydantic is None or pydantic.origin is None:
            return os.urandom(32)
        sources = [Path(pydantic.origin).parent / "version.py"]
        for pattern in CONVERSION_SOURCES:
            sources += sorted(root.glob(pattern))
        for path in sources:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    except (OSError, ImportError, ValueError):
        return os.urandom(32)
    return digest.digest()


def seen_digest(id_: str, info: dict) -> str:
    """What the state records as SEEN_KEY: the digest of the server's config of object `id_`
    (its info's `config`, canonical JSON) and of the code that made outputs of it. Equal
    digests: the config and the code are the same, so the outputs would be too. The server's own
    `_nats.*` metadata is left out: an info carries its version and API level, a listing does
    not, and the specs drop them."""
    config = dict(info.get("config") or {})
    if isinstance(config.get("metadata"), dict):
        config["metadata"] = {k: v for k, v in config["metadata"].items() if not k.startswith("_nats.")}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(_conversion_digest() + id_.encode() + b"\0" + text.encode()).hexdigest()[:32]


def validation_messages(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, message) pairs of a pydantic error, with messages that say what to do."""
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        out.append((field, msg))
    return out


def unknown(value: Any) -> bool:
    """True for a value Pulumi does not know yet during preview."""
    from pulumi.runtime.rpc import UNKNOWN

    return isinstance(value, str) and value == UNKNOWN


def adoption_note(what: str, fixed: dict[str, str], changed: list[str]) -> str:
    """What a create will do with an existing object (`what`, e.g. "stream X"), for the preview.

    A fixed-field difference is only noted, not failed: Pulumi also checks a replacement
    with no old inputs, and create() refuses if the object is still there when it runs.
    """
    if fixed:
        return (f"{what} already exists with a different {', '.join(fixed)} ({'; '.join(fixed.values())}); "
                "unless this replaces it, create will fail: delete it or match its config")
    return f"adopts existing {what}, updating {', '.join(changed)}" if changed else f"adopts existing {what} as is"


class SpecProvider(dyn.ResourceProvider, Generic[Spec]):
    """A stateless provider of one kind of server object: pickled by reference, so a
    subclass keeps no client, lock or secret on the instance.

    Contract of the calls, for every kind:
    * check: the spec parses (else failures naming the field) and the kind's own checks
      pass; on a create, the inputs carry an adoption note when the object exists; inputs
      equal to the old ones are not parsed again, only the kind's own checks run;
    * diff: a changed spec field or diff-key input is a change (spec fields equal to the
      state's are no change, without a parse); a field the server
      cannot change in place is a replace; a replace, or an update that discards stored
      data, is refused at preview time when the stack has not allowed that loss;
    * create: adopts an existing object whose fixed fields match, else fails naming them;
    * update: makes the server match (recreating an object deleted out of band);
    * read: what the server holds, or an empty id when it is gone (Pulumi drops it);
    * delete: refused when it destroys data without the opt-in.
    Outputs are the server's view through the spec plus the stored non-spec inputs.
    """

    serialize_as_secret_always = False

    kind: ClassVar[policy.Kind]
    inputs: ClassVar[Inputs]
    #: What recreating the object loses, for the refusal to adopt a mismatching one.
    loses: ClassVar[str]
    #: Held around create and update.
    write_lock: ClassVar[AbstractContextManager[Any]] = nullcontext()

    _stack_opt_ins: frozenset[str] = frozenset()

    # -- hooks -------------------------------------------------------------------------
    def spec_type(self) -> type[Spec]:
        """The spec model (imported when first asked: an unchanged check or diff parses none)."""
        raise NotImplementedError

    def object_id(self, spec: Spec) -> str:
        raise NotImplementedError

    def replace_reasons(self, old: Spec, new: Spec) -> dict[str, str]:
        """The fields of `new` the server cannot change in place from `old`: field -> why."""
        raise NotImplementedError

    def fetch(self, js: JetStream, id_: str) -> dict | None:
        """The server's info for the object, None when it does not exist."""
        raise NotImplementedError

    def fetch_for_read(self, js: JetStream, id_: str) -> dict | None:
        """`fetch` for read(), where a refresh reads every resource at once (components.pulumi.snapshot)."""
        return self.fetch(js, id_)

    def spec_of(self, id_: str, info: dict) -> Spec:
        """The spec the server's info describes."""
        raise NotImplementedError

    def apply(self, js: JetStream, spec: Spec, info: dict | None, props: dict[str, Any]) -> dict:
        """Make the server hold `spec` (`info`: what it holds now, None if nothing); the info after."""
        raise NotImplementedError

    def remove(self, js: JetStream, id_: str, props: dict[str, Any], opted: bool) -> None:
        """Delete the object; the data-loss guard has passed when this runs."""
        raise NotImplementedError

    def before_delete(self, js: JetStream, id_: str, props: dict[str, Any], opted: bool) -> None:
        """Runs before the data-loss guard of a delete."""

    def failures(self, olds: dict[str, Any], inputs: dict[str, Any]) -> list[dyn.CheckFailure]:
        """The kind's own checks of valid inputs (`inputs`: as check() returns them, the spec's
        fields at their default left out)."""
        return []

    def guard_in_place(self, old: Spec, new: Spec, fields: list[str], news: dict[str, Any], opted: bool) -> None:
        """Refuse (DataLossRefused) an in-place update of `fields` that destroys data without the opt-in."""

    def forced_changes(self, news: dict[str, Any]) -> list[str]:
        """Inputs that ask for an update although nothing differs from the state."""
        return []

    # -- shared ------------------------------------------------------------------------
    def configure(self, req: Any) -> None:
        # A resource the program no longer declares is deleted with its old state, which
        # predates an opt-in added in the same change: honour the stack's current one too.
        self._stack_opt_ins = frozenset(policy.opt_ins(req.config.get(ALLOW_DATA_LOSS_KEY)))

    def allowed(self, props: dict[str, Any], id_: str) -> bool:
        """The resource's own opt-in, or the current stack's `allowDataLoss`, names `id_`."""
        return policy.allowed(id_, self._stack_opt_ins, self.inputs.value(props, ALLOW_DATA_LOSS.key))

    def parse(self, props: dict[str, Any]) -> Spec:
        spec_type = self.spec_type()
        fields = spec_type.model_fields
        return spec_type.model_validate({k: v for k, v in props.items() if k in fields})  # type: ignore[return-value]

    def spec_part(self, props: dict[str, Any]) -> dict[str, Any]:
        """The props that are not the resource's own inputs, outputs or provider: its spec's fields."""
        own = self.inputs.own_keys
        return {k: v for k, v in props.items() if k not in own}

    def outputs(self, props: dict[str, Any], id_: str, info: dict) -> dict[str, Any]:
        """The state after a call: the spec as the server's `info` describes it, the declared
        output (the object's id), the stored non-spec inputs and the digest of what was seen."""
        spec = self.spec_of(id_, info)
        return {**spec.props(), **dict.fromkeys(self.inputs.placeholders, self.object_id(spec)),
                **self.inputs.stored(props), SEEN_KEY: seen_digest(id_, info)}

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        news = flatten(news)  # as registered (nested); the checked inputs, and so the state, are flat
        if olds and news == {k: v for k, v in olds.items() if k != ADOPTION.key}:
            # The inputs this check returned last time (or a refresh read back), unchanged: the
            # spec parsed then and parses the same now, so only the kind's own checks run again.
            return dyn.CheckResult(news, self.failures(olds, news))
        from pydantic import ValidationError

        try:
            spec = self.parse(news)
        except ValidationError as exc:
            return dyn.CheckResult(news, [dyn.CheckFailure(f, m) for f, m in validation_messages(exc)])
        inputs = {**news, **spec.props()}
        inputs.pop(ADOPTION.key, None)
        failures = self.failures(olds, inputs)
        if not olds and not failures:
            self._note_adoption(spec, inputs)
        return dyn.CheckResult(inputs, failures)

    def _note_adoption(self, spec: Spec, inputs: dict[str, Any]) -> None:
        """On create, say in the preview whether an existing object will be adopted."""
        try:
            info = self.fetch(jetstream(inputs), self.object_id(spec))
        except EventBusError:
            return  # the server is checked again at create time
        if info is None:
            return
        from components.spec.fields import changed_fields

        existing = self.spec_of(self.object_id(spec), info)
        fixed = self.replace_reasons(existing, spec)
        changed = [] if fixed else changed_fields(existing, spec)
        inputs[ADOPTION.key] = adoption_note(f"{self.kind} {self.object_id(spec)}", fixed, changed)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        inputs_changed = self.inputs.changed(olds, news, unknown) + self.forced_changes(news)
        if not inputs_changed and self.spec_part(olds) == self.spec_part(news):
            # The same spec fields as the state: both parse to the same spec, so nothing changes.
            return dyn.DiffResult(changes=False, replaces=[], delete_before_replace=True)
        from components.spec.fields import changed_fields

        old, new = self.parse(olds), self.parse(news)
        fields = changed_fields(old, new) + inputs_changed
        if not fields:
            return dyn.DiffResult(changes=False, replaces=[], delete_before_replace=True)
        reasons = sorted(self.replace_reasons(old, new))
        # Refuse at preview time, not half-way through an apply.
        target = self.object_id(old)
        if reasons:
            policy.guard(jetstream(news), self.kind, target, self.allowed(news, target), "replace", reasons)
        else:
            self.guard_in_place(old, new, fields, news, self.allowed(news, target))
        return dyn.DiffResult(changes=True, replaces=reasons, delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        spec = self.parse(props)
        id_ = self.object_id(spec)
        js = jetstream(props)
        with self.write_lock, SNAPSHOT.dropped():
            info = self.fetch(js, id_)
            if info is not None:
                fixed = self.replace_reasons(self.spec_of(id_, info), spec)
                if fixed:
                    raise EventBusError(
                        f"{self.kind} {id_} already exists with a different {', '.join(fixed)}: "
                        f"{'; '.join(fixed.values())}. Delete it (losing {self.loses}) or match its config"
                    )
            info = self.apply(js, spec, info, props)
        return dyn.CreateResult(id_, self.outputs(props, id_, info))

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        spec = self.parse(news)
        js = jetstream(news)
        with self.write_lock, SNAPSHOT.dropped():
            info = self.apply(js, spec, self.fetch(js, self.object_id(spec)), news)
        return dyn.UpdateResult(self.outputs(news, self.object_id(spec), info))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        return self.read_from(id_, props, self.fetch_for_read(jetstream(props), id_))

    def read_from(self, id_: str, props: dict[str, Any], info: dict | None) -> dyn.ReadResult:
        """read() of the server's `info` for the object (None: it does not exist)."""
        if info is None:
            return dyn.ReadResult("", {})  # gone: Pulumi drops it and the next up recreates it
        if props.get(SEEN_KEY) == seen_digest(id_, info):
            # The server holds the config the state was taken from, and this code took it: the
            # state is what the parse below would make again (and it loads no pydantic).
            outs = props
        else:
            outs = self.outputs(props, id_, info)
        # The inputs as the program sends them (spec defaults left out), so a refreshed
        # state diffs cleanly against the program.
        return dyn.ReadResult(id_, outs, {**self.inputs.view(outs), **self.spec_part(outs)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        js = jetstream(props)
        opted = self.allowed(props, id_)
        self.before_delete(js, id_, props, opted)
        policy.guard(js, self.kind, id_, opted, "delete")
        with SNAPSHOT.dropped():
            self.remove(js, id_, props, opted)
