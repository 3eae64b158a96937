"""Where the NATS servers are and how to authenticate: the one connection recipe's inputs.

Kept apart from the client so that what only describes a connection (the stack config,
the resources a program declares) does not load nats-py. A plain dataclass, not a
pydantic model: the provider process builds one from a resource's props for every call
that talks to the server, and a refresh that finds nothing changed loads no pydantic
(components.pulumi.base). The stack's own keys are validated by StackConfig.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


def _credential(description: str) -> Any:
    """An optional text field: a credential or a TLS setting, filled from the stack key `nats<Name>`."""
    return field(default=None, metadata={"credential": True, "description": description})


def split_servers(value: object) -> tuple[str, ...]:
    """Server URLs from a comma-separated text or a list of them, blanks dropped."""
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, Iterable):
        raise TypeError(f"servers: expected a URL text or a list of URLs, got {value!r}")
    return tuple(s.strip() for entry in entries for s in str(entry).split(",") if s.strip())


@dataclass(frozen=True)
class ConnectionSettings:
    """Where the NATS servers are and how to authenticate. Every credential is optional.

    Credentials are values, not paths, so they can be Pulumi secrets: `creds` is the
    content of a .creds file, `nkey_seed` the seed ("SU..."), TLS fields are PEM text.
    `servers` may be given as one comma-separated text; it is kept as a tuple.
    """

    servers: tuple[str, ...]
    user: str | None = _credential("NATS user name (with natsPassword)")
    password: str | None = _credential("NATS password; set it with `pulumi config set --secret`")
    token: str | None = _credential("NATS token; set it with `pulumi config set --secret`")
    creds: str | None = _credential("Content of a NATS .creds file (JWT and seed); a secret")
    nkey_seed: str | None = _credential("NATS nkey seed (SU...); a secret")
    tls_ca: str | None = _credential("PEM of the CA that signed the servers' TLS certificates")
    tls_cert: str | None = _credential("PEM client certificate for TLS client authentication")
    tls_key: str | None = _credential("PEM key of the TLS client certificate; a secret")
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        servers = split_servers(self.servers)
        if not servers:
            raise ValueError("servers: at least one NATS server URL is needed, e.g. nats://127.0.0.1:4222")
        object.__setattr__(self, "servers", servers)
        for name in self.credential_fields():
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name}: expected text, got {type(value).__name__}")
        object.__setattr__(self, "connect_timeout", float(self.connect_timeout))

    @classmethod
    def credential_fields(cls) -> dict[str, str]:
        """Each credential field -> its description."""
        return {f.name: f.metadata["description"] for f in fields(cls) if f.metadata.get("credential")}

    @classmethod
    def from_props(cls, servers: Any, credentials: dict | None) -> ConnectionSettings:
        return cls(servers=servers, **{k: v for k, v in (credentials or {}).items() if v})

    @classmethod
    def from_env(cls, url: str | None = None) -> ConnectionSettings:
        """The usual NATS environment: NATS_URL, NATS_USER/NATS_PASSWORD, NATS_TOKEN,
        NATS_CREDS (a path), NATS_NKEY (a seed file path), NATS_CA/NATS_CERT/NATS_KEY (paths)."""

        def read(var: str) -> str | None:
            path = os.environ.get(var)
            if not path:
                return None
            with open(path, encoding="utf-8") as fh:
                return fh.read()

        return cls(
            servers=split_servers(url or os.environ.get("NATS_URL", "nats://127.0.0.1:4222")),
            user=os.environ.get("NATS_USER") or None,
            password=os.environ.get("NATS_PASSWORD") or None,
            token=os.environ.get("NATS_TOKEN") or None,
            creds=read("NATS_CREDS"),
            nkey_seed=read("NATS_NKEY"),
            tls_ca=read("NATS_CA"),
            tls_cert=read("NATS_CERT"),
            tls_key=read("NATS_KEY"),
        )

    def credentials(self) -> dict[str, str]:
        """The credentials and TLS settings that are set."""
        return {name: getattr(self, name) for name in self.credential_fields() if getattr(self, name) is not None}

    def with_timeout(self, connect_timeout: float) -> ConnectionSettings:
        return replace(self, connect_timeout=connect_timeout)

    def cache_key(self) -> str:
        """Which cached connection serves these settings: servers and credentials, not the
        connect timeout (that only says how long to wait for a new one)."""
        values = {k: v for k, v in asdict(self).items() if k != "connect_timeout"}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        return ",".join(self.servers)
