"""What the stream and consumer providers share: connection props, locking, result shaping."""

from __future__ import annotations

import threading
from typing import Any

from pydantic import ValidationError

from components.jetstream.client import ConnectionSettings, JetStream
from components.spec.stack import PROJECT

#: Provider inputs that are not part of the object's config.
SERVERS = "servers"
CREDENTIALS = "credentials"
ALLOW_DATA_LOSS = "allow_data_loss"
#: Set by check() on a create that adopts an existing object; shown in the preview.
ADOPTION = "adoption"

#: The stack config key (project namespace) naming objects that may lose data.
ALLOW_DATA_LOSS_KEY = f"{PROJECT}:allowDataLoss"

#: Stream writes (create, update, subject hand-over) run one at a time in a provider
#: process, so a hand-over's read-modify-write of another stream never races an update.
STREAM_WRITE_LOCK = threading.RLock()


def connection_inputs(settings: ConnectionSettings) -> tuple[list[str], dict[str, str]]:
    """Split settings into the plain `servers` input and the `credentials` input (a secret)."""
    creds = settings.model_dump(exclude={"servers", "connect_timeout"}, exclude_none=True)
    return list(settings.servers), creds


def jetstream(props: dict[str, Any]) -> JetStream:
    return JetStream(ConnectionSettings.from_props(props[SERVERS], props.get(CREDENTIALS)))


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


def opt_ins(raw: Any) -> tuple[str, ...]:
    """The entries of a raw `allowDataLoss` config value, in order.

    Pulumi passes structured config as JSON text; a value that is not JSON, or a single
    entry rather than a list, still names what it names.
    """
    import json

    if raw is None:
        return ()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return (raw,)
    if isinstance(raw, (list, tuple)):
        return tuple(str(v) for v in raw)
    return (str(raw),)


class OptInAware:
    """Mixin for providers: the current stack's `allowDataLoss`, read in configure().

    A resource the program no longer declares is deleted with its old state, which
    predates an opt-in added in the same change. So a delete also honours the opt-in
    of the stack config the deployment runs with.
    """

    _stack_opt_ins: frozenset[str] = frozenset()

    def configure(self, req: Any) -> None:
        self._stack_opt_ins = frozenset(opt_ins(req.config.get(ALLOW_DATA_LOSS_KEY)))

    def allowed(self, props: dict[str, Any], name: str) -> bool:
        return bool(props.get(ALLOW_DATA_LOSS)) or name in self._stack_opt_ins


def adoption_note(what: str, fixed: dict[str, str], changed: list[str]) -> str:
    """What a create will do with an existing object (`what`, e.g. "stream X"), for the preview.

    A fixed-field difference is only noted, not failed: Pulumi also checks a replacement
    with no old inputs, and create() refuses if the object is still there when it runs.
    """
    if fixed:
        return (f"{what} already exists with a different {', '.join(fixed)} ({'; '.join(fixed.values())}); "
                "unless this replaces it, create will fail: delete it or match its config")
    return f"adopts existing {what}, updating {', '.join(changed)}" if changed else f"adopts existing {what} as is"


def changed_inputs(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The non-spec inputs among `keys` that differ (values not yet known count as unchanged)."""
    return [k for k in keys if olds.get(k) != news.get(k) and not unknown(news.get(k))]


#: Inputs that are not part of an object's spec.
OTHER_INPUTS = (SERVERS, CREDENTIALS, ALLOW_DATA_LOSS, "takeover", "stream_subjects", "drain_timeout")


def input_view(outs: dict[str, Any], spec_props: dict[str, Any]) -> dict[str, Any]:
    """What read() reports as inputs: the spec as the program sends it (defaults left
    out) plus the other inputs, so a refreshed state diffs cleanly against the program."""
    return {**{k: outs[k] for k in OTHER_INPUTS if k in outs}, **spec_props}
