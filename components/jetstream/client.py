"""Connection settings, a synchronous JetStream management API, and its transport.

Pulumi calls provider methods from up to four worker threads, and the CLI is
synchronous, while nats-py is asyncio. So each process keeps one event loop on
a daemon thread and one cached connection per distinct `ConnectionSettings`;
callers use the blocking `JetStream` API. Nothing here is pickled or stored:
settings (secrets included) live only in memory for the life of the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
from nats.aio.client import Client, RawCredentials
from nats.errors import AuthorizationError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.jetstream.errors import (
    ConsumerNotFound,
    JetStreamAPIError,
    NatsConnectionError,
    StreamNotFound,
    api_error,
)

T = TypeVar("T")

#: err_code of STREAM.MSG.GET when the stream holds no such message.
NO_MESSAGE = 10037

#: Request timeout for one JetStream API call, seconds.
API_TIMEOUT = 10.0


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
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def describe(self) -> str:
        return ",".join(self.servers)


class _Loop:
    """One asyncio loop on a daemon thread, shared by every caller in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        with self._lock:
            if self._loop is None or not self._loop.is_running():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=serve, name="nats-loop", daemon=True).start()
                ready.wait()
                self._loop = loop
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


_LOOP = _Loop()
_CLIENTS: dict[str, Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _tls_context(settings: ConnectionSettings) -> ssl.SSLContext | None:
    if not (settings.tls_ca or settings.tls_cert):
        return None
    ctx = ssl.create_default_context(cadata=settings.tls_ca) if settings.tls_ca else ssl.create_default_context()
    if settings.tls_cert and settings.tls_key:
        # load_cert_chain only reads files: write them privately, load, remove.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            for path, text in ((cert, settings.tls_cert), (key, settings.tls_key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)
            ctx.load_cert_chain(cert, key)
    return ctx


def connect_failure(exc: BaseException, timeout: float) -> str:
    """The cause of a failed connect attempt, in words an operator acts on.

    One of: authorization violation, TLS, connection refused, host not found, no answer
    (timeout), or the error's own text.
    """
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, AuthorizationError) or "authorization violation" in lowered or "authentication" in lowered:
        return ("authorization violation: the server refused these credentials (check natsUser/natsPassword, "
                "natsToken, natsCreds or natsNkeySeed; for eventbus NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS)")
    if isinstance(exc, ssl.SSLError) or "tls" in lowered or "ssl" in lowered:
        reason = getattr(exc, "reason", None) or text or type(exc).__name__
        return f"TLS: {reason} (check the URL scheme tls:// and natsTlsCa/natsTlsCert/natsTlsKey)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens on that host and port (check natsUrl or NATS_URL)"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror or text}; check natsUrl or NATS_URL)"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, NatsTimeout)):
        return f"no answer within {timeout:g}s (connect timeout; check natsUrl or NATS_URL, and the network)"
    if isinstance(exc, OSError):
        return exc.strerror or text or type(exc).__name__
    return text or type(exc).__name__


class _FirstConnectFailed(Exception):
    """Every configured server failed once: stop the client's own retries (see connect)."""


async def connect(settings: ConnectionSettings) -> Client:
    """Open a new NATS connection with these settings (servers, credentials, TLS).

    The first connect tries each configured server once and then fails with every
    server's cause (connection refused, authorization violation, TLS, timeout): a
    deploy or a CLI that cannot reach its server says so at once, instead of waiting
    out the client's reconnect budget. Once connected, the client reconnects as usual.
    Raises NatsConnectionError naming the URL(s) and the cause.
    """
    failures: list[BaseException] = []
    connected = False

    async def _first_connect_errors(exc: Exception) -> None:
        # nats-py retries every server max_reconnect_attempts times, reconnect_time_wait
        # apart, before its first connect gives up; its error callback sees each attempt.
        if connected:
            return
        failures.append(exc)
        if len(failures) >= len(settings.servers):
            raise _FirstConnectFailed

    kwargs: dict[str, Any] = {
        "servers": list(settings.servers),
        "dont_randomize": True,
        "connect_timeout": settings.connect_timeout,
        "max_reconnect_attempts": 2,
        "allow_reconnect": True,
        "error_cb": _first_connect_errors,
        "name": "aa-event-bus",
    }
    if settings.user:
        kwargs["user"] = settings.user
        kwargs["password"] = settings.password or ""
    if settings.token:
        kwargs["token"] = settings.token
    if settings.creds:
        kwargs["user_credentials"] = RawCredentials(settings.creds)
    if settings.nkey_seed:
        kwargs["nkeys_seed_str"] = settings.nkey_seed.strip()
    try:
        tls = _tls_context(settings)
    except (ssl.SSLError, ValueError) as exc:
        raise NatsConnectionError(
            f"cannot connect to NATS at {settings.describe()}: TLS: the certificate settings are not valid PEM "
            f"({getattr(exc, 'reason', None) or exc}); check natsTlsCa, natsTlsCert and natsTlsKey"
        ) from exc
    if tls is not None:
        kwargs["tls"] = tls
    try:
        nc = await nats.connect(**kwargs)
    except (_FirstConnectFailed, NoServersError, OSError, asyncio.TimeoutError, NatsError) as exc:
        causes = failures or [exc]
        raise NatsConnectionError(
            f"cannot connect to NATS at {settings.describe()}: {_causes(settings, causes)}"
        ) from (causes[-1] if causes else exc)
    connected = True
    return nc


def _causes(settings: ConnectionSettings, failures: list[BaseException]) -> str:
    """One cause when all servers failed alike, else each attempt's cause in order."""
    texts = [connect_failure(f, settings.connect_timeout) for f in failures]
    if len(set(texts)) == 1:
        return texts[0]
    # Servers are tried in the order given (dont_randomize), one attempt each.
    return "; ".join(f"{url}: {text}" for url, text in zip(settings.servers, texts, strict=False))


def client_for(settings: ConnectionSettings) -> Client:
    """The cached connection for these settings, opened on first use."""
    key = settings.cache_key()
    with _CLIENTS_LOCK:
        nc = _CLIENTS.get(key)
        if nc is not None and nc.is_connected:
            return nc
        nc = _LOOP.run(connect(settings), timeout=settings.connect_timeout * 3 + 5)
        _CLIENTS[key] = nc
        return nc


def close_all() -> None:
    with _CLIENTS_LOCK:
        for nc in _CLIENTS.values():
            try:
                _LOOP.run(nc.close(), timeout=5)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        _CLIENTS.clear()


class JetStream:
    """Blocking JetStream management calls, with typed errors and pedantic requests."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.nc = client_for(settings)
        self._api_level: int | None = None

    # -- transport -------------------------------------------------------------------
    def request(self, subject: str, body: dict | None = None, *, stream: str | None = None,
                consumer: str | None = None, timeout: float = API_TIMEOUT) -> dict:
        payload = json.dumps(body).encode() if body is not None else b""

        async def call() -> bytes:
            msg = await self.nc.request(subject, payload, timeout=timeout)
            return msg.data

        try:
            data = _LOOP.run(call(), timeout=timeout + 5)
        except NoRespondersError as exc:
            raise NatsConnectionError(
                f"no JetStream responded on {self.settings.describe()} ({subject}): "
                "is the server running with JetStream enabled (-js)?"
            ) from exc
        except (NatsTimeout, asyncio.TimeoutError, TimeoutError) as exc:
            raise NatsConnectionError(f"JetStream request {subject} timed out on {self.settings.describe()}") from exc
        reply = json.loads(data)
        if "error" in reply:
            raise api_error(reply["error"], stream=stream, consumer=consumer)
        return reply

    def publish(self, subject: str, payload: bytes, headers: dict | None = None, timeout: float = 5.0) -> dict:
        """Publish and wait for the stream's ack (raises NatsConnectionError on no responders)."""
        reply = self.request_raw(subject, payload, headers=headers, timeout=timeout)
        if "error" in reply:
            raise api_error(reply["error"])
        return reply

    def request_raw(self, subject: str, payload: bytes, headers: dict | None = None, timeout: float = 5.0) -> dict:
        async def call() -> bytes:
            msg = await self.nc.request(subject, payload, timeout=timeout, headers=headers)
            return msg.data

        try:
            return json.loads(_LOOP.run(call(), timeout=timeout + 5))
        except NoRespondersError as exc:
            raise NatsConnectionError(f"no stream stored {subject}: no responders") from exc
        except (NatsTimeout, asyncio.TimeoutError, TimeoutError) as exc:
            raise NatsConnectionError(f"publish to {subject} timed out") from exc

    # -- account -------------------------------------------------------------------
    def api_level(self) -> int:
        """The server's JetStream API level (0 before 2.11, which has no pedantic mode)."""
        if self._api_level is None:
            info = self.request("$JS.API.INFO")
            self._api_level = int((info.get("api") or {}).get("level", 0))
        return self._api_level

    def _pedantic(self, body: dict) -> dict:
        if self.api_level() >= 1:
            body["pedantic"] = True
        return body

    # -- streams -------------------------------------------------------------------
    def stream_info(self, name: str) -> dict | None:
        """The stream's info (config and state), or None if it does not exist."""
        try:
            return self.request(f"$JS.API.STREAM.INFO.{name}", stream=name)
        except StreamNotFound:
            return None

    def stream_create(self, config: dict) -> dict:
        name = config["name"]
        return self.request(f"$JS.API.STREAM.CREATE.{name}", self._pedantic(dict(config)), stream=name)

    def stream_update(self, config: dict) -> dict:
        name = config["name"]
        return self.request(f"$JS.API.STREAM.UPDATE.{name}", self._pedantic(dict(config)), stream=name)

    def stream_delete(self, name: str) -> None:
        try:
            self.request(f"$JS.API.STREAM.DELETE.{name}", stream=name)
        except StreamNotFound:
            pass

    def stream_names(self, subject: str | None = None) -> list[str]:
        """Names of all streams, or of those whose subjects overlap `subject`."""
        names: list[str] = []
        offset = 0
        while True:
            body: dict[str, Any] = {"offset": offset}
            if subject:
                body["subject"] = subject
            reply = self.request("$JS.API.STREAM.NAMES", body)
            page = reply.get("streams") or []
            names.extend(page)
            offset += len(page)
            if not page or offset >= int(reply.get("total", 0)):
                return names

    def stream_infos(self) -> list[dict]:
        infos: list[dict] = []
        offset = 0
        while True:
            reply = self.request("$JS.API.STREAM.LIST", {"offset": offset})
            page = reply.get("streams") or []
            infos.extend(page)
            offset += len(page)
            if not page or offset >= int(reply.get("total", 0)):
                return infos

    def msg_get(self, stream: str, seq: int, next_by_subj: str | None = None) -> dict | None:
        """The stored message at `seq` (or, with `next_by_subj`, the first at or after it under
        that subject), or None when the stream holds no such message (err_code 10037)."""
        body: dict[str, Any] = {"seq": seq}
        if next_by_subj:
            body["next_by_subj"] = next_by_subj
        try:
            return dict(self.request(f"$JS.API.STREAM.MSG.GET.{stream}", body, stream=stream)["message"])
        except JetStreamAPIError as exc:
            if exc.err_code == NO_MESSAGE:
                return None
            raise

    # -- consumers -----------------------------------------------------------------
    def consumer_info(self, stream: str, name: str) -> dict | None:
        """The consumer's info, or None if it (or its stream) does not exist."""
        try:
            return self.request(f"$JS.API.CONSUMER.INFO.{stream}.{name}", stream=stream, consumer=name)
        except (ConsumerNotFound, StreamNotFound):
            return None

    def consumer_upsert(self, stream: str, config: dict, action: str) -> dict:
        """action: "create" (fails if it exists differently) or "update" (fails if absent)."""
        name = config["durable_name"]
        body = self._pedantic({"stream_name": stream, "config": config, "action": action})
        return self.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}", body, stream=stream, consumer=name)

    def consumer_delete(self, stream: str, name: str) -> None:
        try:
            self.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", stream=stream, consumer=name)
        except (ConsumerNotFound, StreamNotFound):
            pass

    def consumer_infos(self, stream: str) -> list[dict]:
        infos: list[dict] = []
        offset = 0
        while True:
            reply = self.request(f"$JS.API.CONSUMER.LIST.{stream}", {"offset": offset}, stream=stream)
            page = reply.get("consumers") or []
            infos.extend(page)
            offset += len(page)
            if not page or offset >= int(reply.get("total", 0)):
                return infos
