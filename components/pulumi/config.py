"""The stack's config, read through the Pulumi SDK (inside a Pulumi program only)."""

from __future__ import annotations

import json
from typing import Any

from components.jetstream.errors import ConfigError
from components.jetstream.settings import ConnectionSettings, split_servers
from components.spec.stack import CREDENTIAL_KEYS, StackConfig, _declared_type, parse_stack_config


def load_pulumi_config() -> tuple[StackConfig, ConnectionSettings]:
    """Read the current stack's config through the Pulumi SDK (inside a Pulumi program only).

    Every key of the project's namespace is read, so a key no field knows fails here
    rather than being ignored. A bad config ends the program with one error naming
    the key (pulumi.RunError: no traceback), before any resource is registered.
    """
    import pulumi
    from pulumi.runtime.config import CONFIG, get_config_env

    namespace = pulumi.Config().name
    values = {**get_config_env(), **CONFIG.get()}
    raw: dict[str, Any] = {}
    try:
        for full_key, value in sorted(values.items()):
            project, _, key = str(full_key).partition(":")
            if project != namespace or value is None:
                continue
            field = StackConfig.model_fields.get(key) or next(
                (f for f in StackConfig.model_fields.values() if f.alias == key), None)
            if field is not None and _declared_type(field.annotation)["type"] in ("object", "array") and isinstance(value, str):
                try:  # structured values arrive as JSON
                    value = json.loads(value)
                except ValueError:
                    raise ConfigError(f"{namespace}:{key}", f"expected a list or mapping, got {value!r}") from None
            raw[key] = value  # numbers and booleans arrive as text; the model parses them
        stack = parse_stack_config(raw, namespace)
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    # Secret values are read as plain text here, kept in memory only, and handed to the
    # resources as Pulumi secrets (see resource_common.connection_inputs).
    credentials = {field: raw[key] for key, field in CREDENTIAL_KEYS.items() if raw.get(key)}
    return stack, ConnectionSettings(servers=split_servers(stack.nats_url), **credentials)
