"""What the stream and consumer providers share: connection props, locking, result shaping."""

from __future__ import annotations

import threading
from typing import Any

from pydantic import ValidationError

from components.nats_client import ConnectionSettings, JetStream

#: Provider inputs that are not part of the object's config.
SERVERS = "servers"
CREDENTIALS = "credentials"
ALLOW_DATA_LOSS = "allow_data_loss"
#: Set by check() on a create that adopts an existing object; shown in the preview.
ADOPTION = "adoption"

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
