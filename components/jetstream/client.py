"""Connection settings, a synchronous JetStream management API, and its transport.

Pulumi calls provider methods from up to four worker threads, and the CLI is
synchronous, while nats-py is asyncio. So each process keeps one event loop on
a daemon thread and one cached connection per distinct `ConnectionSettings`;
callers use the blocking `JetStream` API. Nothing here is pickled or stored:
settings (secrets included) live only in memory for the life of the process.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import nats.js.errors
from nats.aio.client import Client, RawCredentials
from nats.errors import AuthorizationError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

from components.jetstream.errors import (
    ConsumerNotFound,
    EventBusError,
    JetStreamAPIError,
    NatsConnectionError,
    NoStreamForSubject,
    StreamNotFound,
    api_error,
    from_nats,
)
from components.jetstream.settings import ConnectionSettings

T = TypeVar("T")

#: err_code of STREAM.MSG.GET when the stream holds no such message.
NO_MESSAGE = 10037

#: Request timeout for one JetStream API call, seconds.
API_TIMEOUT = 10.0

#: err_code of a stream create the server could not complete; with STORE_NOT_CREATED in its
#: description, the server could not make the stream's directory.
STREAM_CREATE_FAILED = 10049
STORE_NOT_CREATED = "error creating store"
#: How often a create whose store the server could not make is tried, and the pause between tries.
#: nats-server removes an account's emptied store directories in the background after its last
#: stream is deleted (stream.go, stop), without ordering it against the API reply: a create that
#: meets that removal fails ("could not create storage directory" in the server's log). A failed
#: create leaves no stream behind, so trying again is safe; a lasting failure (a full or read-only
#: disk) is raised after the last try.
STORE_TRIES = 5
STORE_PAUSE = 0.05


def store_not_created(exc: JetStreamAPIError) -> bool:
    """True when the server refused a stream create because it could not make the stream's store."""
    return exc.err_code == STREAM_CREATE_FAILED and STORE_NOT_CREATED in exc.description.lower()


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


#: What a JetStream call through nats-py can fail with; `jetstream_error` maps each to this project's errors.
FAILURES: tuple[type[BaseException], ...] = (
    NoRespondersError, NatsTimeout, asyncio.TimeoutError, TimeoutError, ConnectionResetError, nats.js.errors.APIError,
)


def jetstream_error(exc: BaseException, subject: str = "", where: str = "", *, publish: bool = False,
                    stream: str | None = None, consumer: str | None = None) -> EventBusError:
    """This project's error for one of `FAILURES`: NatsConnectionError when the server did not
    answer (NoStreamForSubject for a publish nobody stored), else the typed JetStreamAPIError
    of the server's err_code. `subject` and `where` (the servers) only add context to the text."""
    at = f" on {where}" if where else ""
    about = f" ({subject})" if subject else ""
    if isinstance(exc, NoRespondersError):
        if publish:
            return NoStreamForSubject(f"no stream stored {subject}: no responders")
        return NatsConnectionError(
            f"no JetStream responded{at}{about}: is the server running with JetStream enabled (-js)?")
    if isinstance(exc, nats.js.errors.APIError):
        if isinstance(exc, nats.js.errors.ServiceUnavailableError) and not exc.err_code:  # nats-py: no responders
            return NatsConnectionError(
                f"no responders (503){at}{about}: the stream or consumer is gone, or JetStream is unavailable")
        return from_nats(exc, stream=stream, consumer=consumer)
    if isinstance(exc, ConnectionResetError):
        return NatsConnectionError(f"JetStream request {subject} failed{at}: {exc}")
    what = "publish to" if publish else "JetStream request"
    return NatsConnectionError(f"{what}{' ' + subject if subject else ''} timed out{at}")


#: The connect timeout of the program's live reads and preflight: a deploy whose server
#: does not answer fails in seconds, not after the default.
PROGRAM_CONNECT_TIMEOUT = 3.0


def connect_quickly(settings: ConnectionSettings, timeout: float = PROGRAM_CONNECT_TIMEOUT) -> JetStream:
    """A JetStream client that waits at most `timeout` seconds for a connection it has to open.

    The connection itself is the process's cached one for these servers and credentials.
    """
    return JetStream(settings.with_timeout(timeout))


#: The server's API level per open connection, asked once ($JS.API.INFO).
_API_LEVELS: weakref.WeakKeyDictionary[Client, int] = weakref.WeakKeyDictionary()


class JetStream:
    """Blocking JetStream management calls, with typed errors and pedantic requests.

    One request path: every call goes through `request` (raw `$JS.API`, where nats-py's
    JetStreamManager lacks the feature or drops fields: pedantic create/update, consumer
    create with an `action`, paging, info replies kept whole for drift checks) or through
    nats-py's JetStreamManager (deletes); both raise this project's errors
    (`components.jetstream.errors`). `fail_fast`: a request whose connection drops fails
    at once instead of waiting out its timeout (see `failing_fast`).
    """

    def __init__(self, settings: ConnectionSettings, *, fail_fast: bool = False,
                 timeout: float = API_TIMEOUT) -> None:
        self.settings = settings
        self.nc = client_for(settings)
        self.fail_fast = fail_fast
        self.timeout = timeout

    def failing_fast(self, timeout: float) -> JetStream:
        """The same connection, with requests that fail as soon as the connection drops.

        A request written into a connection that then breaks never gets its reply; for an
        idempotent step that is retried (the hand-over), waiting out the timeout only delays
        the retry.
        """
        return JetStream(self.settings, fail_fast=True, timeout=timeout)

    # -- transport -------------------------------------------------------------------
    async def _watched(self, call: Coroutine[Any, Any, T]) -> T:
        nc = self.nc
        if not nc.is_connected:
            raise ConnectionResetError("not connected")
        task = asyncio.ensure_future(call)
        while not task.done():
            await asyncio.wait([task], timeout=0.02)
            if not task.done() and not nc.is_connected:
                task.cancel()
                raise ConnectionResetError("connection lost while waiting for the reply")
        return task.result()

    def _run(self, call: Coroutine[Any, Any, T], subject: str, timeout: float, *, publish: bool = False,
             stream: str | None = None, consumer: str | None = None) -> T:
        """Run one call on the shared loop; transport and nats-py API failures raise this project's errors."""
        try:
            return _LOOP.run(self._watched(call) if self.fail_fast else call, timeout=timeout + 5)
        except FAILURES as exc:
            raise jetstream_error(exc, subject, self.settings.describe(), publish=publish, stream=stream,
                                  consumer=consumer) from exc

    def request(self, subject: str, body: dict | None = None, *, stream: str | None = None,
                consumer: str | None = None, timeout: float | None = None) -> dict:
        """One `$JS.API` request; the reply, or the typed error of its `error` object."""
        wait = self.timeout if timeout is None else timeout
        payload = json.dumps(body).encode() if body is not None else b""
        msg = self._run(self.nc.request(subject, payload, timeout=wait), subject, wait)
        reply = json.loads(msg.data)
        if "error" in reply:
            raise api_error(reply["error"], stream=stream, consumer=consumer)
        return reply

    def publish(self, subject: str, payload: bytes, headers: dict | None = None, timeout: float = 5.0) -> dict:
        """Publish and wait for the stream's ack: the ack (stream, seq, duplicate).

        Raises NoStreamForSubject when no stream stores `subject`.
        """
        msg = self._run(self.nc.request(subject, payload, timeout=timeout, headers=headers), subject, timeout,
                        publish=True)
        reply = json.loads(msg.data)
        if "error" in reply:
            raise api_error(reply["error"])
        return reply

    def _paged(self, subject: str, key: str, body: dict[str, Any] | None = None, *, stream: str | None = None) -> list:
        """Every item of a paged list reply (`key`: "streams" or "consumers")."""
        items: list = []
        while True:
            reply = self.request(subject, {**(body or {}), "offset": len(items)}, stream=stream)
            page = reply.get(key) or []
            items.extend(page)
            if not page or len(items) >= int(reply.get("total", 0)):
                return items

    # -- account -------------------------------------------------------------------
    def api_level(self) -> int:
        """The server's JetStream API level (0 before 2.11, which has no pedantic mode); asked once per connection."""
        if self.nc not in _API_LEVELS:
            info = self.request("$JS.API.INFO")
            _API_LEVELS[self.nc] = int((info.get("api") or {}).get("level", 0))
        return _API_LEVELS[self.nc]

    def _pedantic(self, body: dict) -> dict:
        return {**body, "pedantic": True} if self.api_level() >= 1 else dict(body)

    # -- streams -------------------------------------------------------------------
    def stream_info(self, name: str) -> dict | None:
        """The stream's info (config and state), or None if it does not exist."""
        try:
            return self.request(f"$JS.API.STREAM.INFO.{name}", stream=name)
        except StreamNotFound:
            return None

    def stream_create(self, config: dict) -> dict:
        """Create the stream; a create that meets the server's removal of emptied store
        directories is tried again (STORE_TRIES)."""
        name = config["name"]
        body = self._pedantic(config)
        tries = 1
        while True:
            try:
                return self.request(f"$JS.API.STREAM.CREATE.{name}", body, stream=name)
            except JetStreamAPIError as exc:
                if tries >= STORE_TRIES or not store_not_created(exc):
                    raise
            tries += 1
            time.sleep(STORE_PAUSE)

    def stream_update(self, config: dict) -> dict:
        name = config["name"]
        return self.request(f"$JS.API.STREAM.UPDATE.{name}", self._pedantic(config), stream=name)

    def stream_delete(self, name: str) -> None:
        """Delete the stream; one that does not exist is already gone."""
        try:
            self._run(self.nc.jsm(timeout=self.timeout).delete_stream(name), f"$JS.API.STREAM.DELETE.{name}",
                      self.timeout, stream=name)
        except StreamNotFound:
            pass

    def stream_infos(self) -> list[dict]:
        """Every stream's info (config and state), as `$JS.API.STREAM.LIST` pages them."""
        return self._paged("$JS.API.STREAM.LIST", "streams")

    def stream_names(self, subject: str | None = None) -> list[str]:
        """Names of all streams, or of those whose subjects overlap `subject`."""
        return self._paged("$JS.API.STREAM.NAMES", "streams", {"subject": subject} if subject else None)

    def subject_count(self, stream: str, subject: str) -> int:
        """Messages `stream` stores under `subject` (a wildcard is summed over its concrete subjects)."""
        total, offset = 0, 0
        while True:
            reply = self.request(f"$JS.API.STREAM.INFO.{stream}", {"subjects_filter": subject, "offset": offset},
                                 stream=stream)
            page = (reply.get("state") or {}).get("subjects") or {}
            total += sum(int(n) for n in page.values())
            offset += len(page)
            if not page or offset >= int(reply.get("total") or 0):
                return total

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

    def msg_delete(self, stream: str, seq: int) -> None:
        """Remove one stored message (`no_erase`: marked deleted, not overwritten)."""
        self.request(f"$JS.API.STREAM.MSG.DELETE.{stream}", {"seq": seq, "no_erase": True}, stream=stream)

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

    def consumer_pause(self, stream: str, name: str, until: str | None) -> dict:
        """Pause the consumer until `until` (RFC 3339), or resume it (None). An update keeps
        the consumer's pause_until as it is: this is the only way to change it in place."""
        body = {"pause_until": until} if until else {}
        return self.request(f"$JS.API.CONSUMER.PAUSE.{stream}.{name}", body, stream=stream, consumer=name)

    def consumer_delete(self, stream: str, name: str) -> None:
        """Delete the consumer; one that (or whose stream) does not exist is already gone."""
        try:
            self._run(self.nc.jsm(timeout=self.timeout).delete_consumer(stream, name),
                      f"$JS.API.CONSUMER.DELETE.{stream}.{name}", self.timeout, stream=stream, consumer=name)
        except (ConsumerNotFound, StreamNotFound):
            pass

    def consumer_infos(self, stream: str) -> list[dict]:
        """Every consumer's info on `stream`."""
        return self._paged(f"$JS.API.CONSUMER.LIST.{stream}", "consumers", stream=stream)
