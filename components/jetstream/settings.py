"""Where the NATS servers are and how to authenticate: the one connection recipe's inputs.

Kept apart from the client so that what only describes a connection (the stack config,
the resources a program declares) does not load nats-py.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ConnectionSettings(BaseModel):
    """Where the NATS servers are and how to authenticate. Every credential is optional.

    Credentials are values, not paths, so they can be Pulumi secrets: `creds` is the
    content of a .creds file, `nkey_seed` the seed ("SU..."), TLS fields are PEM text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: tuple[str, ...] = Field(min_length=1)
    user: str | None = Field(default=None, description="NATS user name (with natsPassword)")
    password: str | None = Field(default=None, description="NATS password; set it with `pulumi config set --secret`")
    token: str | None = Field(default=None, description="NATS token; set it with `pulumi config set --secret`")
    creds: str | None = Field(default=None, description="Content of a NATS .creds file (JWT and seed); a secret")
    nkey_seed: str | None = Field(default=None, description="NATS nkey seed (SU...); a secret")
    tls_ca: str | None = Field(default=None, description="PEM of the CA that signed the servers' TLS certificates")
    tls_cert: str | None = Field(default=None, description="PEM client certificate for TLS client authentication")
    tls_key: str | None = Field(default=None, description="PEM key of the TLS client certificate; a secret")
    connect_timeout: float = 5.0

    @field_validator("servers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        entries = [value] if isinstance(value, str) else value
        if isinstance(entries, (list, tuple)):
            return tuple(s.strip() for entry in entries for s in str(entry).split(",") if s.strip())
        return value

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

        return cls.model_validate({
            "servers": url or os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
            "user": os.environ.get("NATS_USER") or None,
            "password": os.environ.get("NATS_PASSWORD") or None,
            "token": os.environ.get("NATS_TOKEN") or None,
            "creds": read("NATS_CREDS"),
            "nkey_seed": read("NATS_NKEY"),
            "tls_ca": read("NATS_CA"),
            "tls_cert": read("NATS_CERT"),
            "tls_key": read("NATS_KEY"),
        })

    def cache_key(self) -> str:
        """Which cached connection serves these settings: servers and credentials, not the
        connect timeout (that only says how long to wait for a new one)."""
        return hashlib.sha256(self.model_dump_json(exclude={"connect_timeout"}).encode()).hexdigest()

    def describe(self) -> str:
        return ",".join(self.servers)
