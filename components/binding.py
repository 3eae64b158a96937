"""Service binding: bind a durable pull consumer over ordered candidate streams, and its pull loop.

What a service (e.g. normalize-service) needs to keep consuming while the
event bus moves from one stream to three under it:

* `bind(js_ctx, durable, candidates)` binds to the FIRST candidate stream that
  has the durable (AA_STREAM_CANDIDATES, e.g. `AA_CORE_HOT,
  ATHLETE_ALLY_EVENTS`). When none has it, `BindError.tried` lists every
  candidate with the reason (stream not found, consumer not found, push
  consumer, no JetStream...), and so does its message.
* `Worker` runs the pull loop: explicit ack on success; `RetryableError` (or any
  other exception from the handler) -> nak with a delay; `PoisonMessage` ->
  publish the payload to the DLQ subject through JetStream (stored in AA_DLQ
  when it exists; headers name the original subject, stream, sequence and
  durable), then term. If that publish fails the message is nak'ed instead, so
  nothing is lost. A retryable failure on the consumer's last allowed delivery
  (max_deliver) is dead-lettered the same way, since the server would otherwise
  drop it silently. Every log line carries `stream=` and `durable=`.

Surviving a migration. When the bound consumer or its stream disappears (a
fetch fails, or the existence check that runs after a few seconds of idleness
finds it gone) the worker rebinds over the candidates, retrying with a short
sleep, logging each attempt, while none has the durable.

Draining before moving. Binding to the first candidate that has the durable
alone would strand the backlog still waiting in ATHLETE_ALLY_EVENTS once
AA_CORE_HOT exists. So when the first candidate has the durable but a LATER
candidate has the same durable with unprocessed messages (pending or awaiting
ack), the worker binds to that later one first (the last such, the oldest data)
and drains it; after each empty fetch it checks again and moves to the first
candidate once the later one is empty. Messages it nak'ed count as unprocessed,
so it does not leave before they are redelivered and handled. (This relies on
the migration's rule that a stream that lost its subjects gets no new
messages, so its backlog only shrinks.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from components.jetstream.client import (
    FAILURES,
    ConnectionSettings,
    connect,  # one connection recipe (credentials, TLS) for the project
    jetstream_error,
)
from components.jetstream.errors import EventBusError, JetStreamAPIError
from components.jetstream.live import LiveConsumer

#: Where poison messages go (NORMALIZE_HRV_DLQ_SUBJECT), stored in AA_DLQ.
DLQ_SUBJECT = "dlq.normalize.hrv.raw-received"

#: Headers a dead-lettered message carries (its own headers are kept too).
H_SUBJECT, H_STREAM, H_SEQUENCE, H_DURABLE, H_ERROR = (
    "AA-Original-Subject", "AA-Original-Stream", "AA-Original-Sequence", "AA-Durable", "AA-Error",
)

Handler = Callable[[Msg], Awaitable[None] | None]


class BindError(EventBusError):
    """No candidate stream has the durable. `tried` is (stream, why) for every candidate, in order."""

    def __init__(self, durable: str, tried: Sequence[tuple[str, str]]) -> None:
        self.durable = durable
        self.tried: list[tuple[str, str]] = list(tried)
        detail = "; ".join(f"{stream}: {why}" for stream, why in self.tried) or "no candidate streams given"
        super().__init__(
            f"cannot bind durable {durable} to any candidate stream ({detail}). "
            "Apply the phase that creates it (pulumi up) or fix the candidate list (AA_STREAM_CANDIDATES)"
        )


class RetryableError(Exception):
    """Raised by a handler for a transient failure: the message is nak'ed and redelivered after a delay."""


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never succeed: it goes to the DLQ subject and is termed."""


@dataclass(frozen=True)
class Probe:
    """One candidate as the server sees it: does it have the durable, and with how much left to do."""

    stream: str
    present: bool
    why: str = ""
    unprocessed: int = 0
    max_deliver: int = -1


def choose(probes: Sequence[Probe]) -> str | None:
    """The stream to consume from: the first candidate with the durable, unless a later candidate's copy
    of the durable still has unprocessed messages, in which case that one (the last such) is drained first."""
    present = [p for p in probes if p.present]
    if not present:
        return None
    behind = [p for p in present[1:] if p.unprocessed > 0]
    return behind[-1].stream if behind else present[0].stream


def _why(exc: BaseException) -> str:
    """A JetStream failure in the project's words (`jetstream_error`): the server's reason with its err_code."""
    if not isinstance(exc, FAILURES):
        return f"{type(exc).__name__}: {exc}"
    error = jetstream_error(exc)
    return error.reason if isinstance(error, JetStreamAPIError) else str(error)


async def probe(js_ctx: Any, durable: str, stream: str) -> Probe:
    """Whether `stream` has `durable` as a pull consumer, with its unprocessed count. Never raises for
    a missing stream or consumer, an unreachable JetStream or a timeout: they are the `why`."""
    try:
        info = await js_ctx.consumer_info(stream, durable)
    except FAILURES as exc:
        return Probe(stream, False, _why(exc))
    consumer = LiveConsumer.from_info(info.as_dict())
    if consumer.push:
        return Probe(stream, False, "is a push consumer (deliver_subject set); a pull worker cannot bind it")
    return Probe(stream, True, "has the durable", consumer.unprocessed, consumer.max_deliver)


async def bind(js_ctx: Any, durable: str, candidates: Sequence[str]) -> tuple[str, Any]:
    """Bind a pull subscription to `durable` on the first of `candidates` that has it.

    `js_ctx` is a nats-py JetStreamContext. Returns (stream, pull subscription). Raises
    BindError listing every candidate and why it was passed over when none has it.
    """
    tried: list[tuple[str, str]] = []
    for stream in candidates:
        found = await probe(js_ctx, durable, stream)
        if found.present:
            return stream, await js_ctx.pull_subscribe_bind(durable=durable, stream=stream)
        tried.append((stream, found.why))
    raise BindError(durable, tried)


class Worker:
    """A durable pull consumer's processing loop, bound over ordered candidates, surviving a migration.

    `start()` runs it on its own asyncio loop and NATS connection in a daemon thread;
    `run(stop)` runs it in the caller's loop until `stop` is set.
    """

    #: Seconds between existence checks while idle, and between attempts while unbound.
    check_interval = 3.0
    retry_delay = 0.5

    def __init__(
        self,
        settings: ConnectionSettings,
        durable: str,
        candidates: Sequence[str],
        handler: Handler,
        *,
        dlq_subject: str = DLQ_SUBJECT,
        batch: int = 10,
        fetch_timeout: float = 1.0,
        nak_delay: float = 5.0,
        log: logging.Logger | None = None,
    ) -> None:
        if not candidates:
            raise ValueError("Worker needs at least one candidate stream")
        self.settings = settings
        self.durable = durable
        self.candidates = list(candidates)
        self.handler = handler
        self.dlq_subject = dlq_subject
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.nak_delay = nak_delay
        self.log = log or logging.getLogger("eventbus.worker")
        #: Where it is bound right now (None while unbound).
        self.bound_stream: str | None = None
        #: Counters, for tests and metrics: acked, nacked, termed, dead_lettered, bind_attempts, rebinds.
        self.stats: dict[str, int] = dict.fromkeys(
            ("acked", "nacked", "termed", "dead_lettered", "bind_attempts", "rebinds"), 0)
        self._max_deliver = -1
        #: The first candidate that had the durable at the last check: where the worker settles.
        self._destination: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- logging ---------------------------------------------------------------------
    def _emit(self, level: int, event: str, stream: str | None, **fields: object) -> None:
        extra = "".join(f" {k}={v}" for k, v in fields.items())
        self.log.log(level, "stream=%s durable=%s %s%s", stream or "-", self.durable, event, extra)

    # -- thread API ------------------------------------------------------------------
    def start(self) -> None:
        """Run the worker on its own event loop and NATS connection in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"worker for {self.durable} is already running")
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop, self._stop = loop, asyncio.Event()
            ready.set()
            try:
                loop.run_until_complete(self.run(self._stop))
            except Exception:  # noqa: BLE001 - the thread must log, not die silently
                self.log.exception("stream=%s durable=%s worker stopped on an error", self.bound_stream or "-",
                                   self.durable)
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"worker-{self.durable}", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to finish its current message and close; wait up to `timeout` seconds."""
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._emit(logging.WARNING, f"worker did not stop within {timeout}s", self.bound_stream)
        self._thread = None

    def wait_bound(self, stream: str | None = None, timeout: float = 10.0) -> bool:
        """Block until the worker is bound (to `stream`, if given); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.bound_stream is not None and (stream is None or self.bound_stream == stream):
                return True
            time.sleep(0.02)
        return False

    # -- the loop --------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, bind, pull, handle; reconnect and rebind as needed; return once `stop` is set."""
        while not stop.is_set():
            try:
                nc = await connect(self.settings)
            except EventBusError as exc:
                self._emit(logging.WARNING, f"cannot connect, retrying in {self.retry_delay}s: {exc}", None)
                await self._sleep(stop, self.retry_delay)
                continue
            try:
                await self._serve(nc, stop)
            except (nats.errors.Error, OSError) as exc:  # the connection failed under us: start over
                self._emit(logging.WARNING, f"connection lost, reconnecting: {type(exc).__name__}: {exc}",
                           self.bound_stream)
                await self._sleep(stop, self.retry_delay)
            finally:
                self.bound_stream = None
                try:
                    await nc.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _probes(self, js: Any) -> list[Probe]:
        return [await probe(js, self.durable, stream) for stream in self.candidates]

    async def _bind(self, js: Any, stop: asyncio.Event) -> tuple[str, Any] | None:
        """Bind where `choose` says, retrying until a candidate has the durable (None when stopped)."""
        while not stop.is_set():
            self.stats["bind_attempts"] += 1
            probes = await self._probes(js)
            target = choose(probes)
            if target is None:
                error = BindError(self.durable, [(p.stream, p.why) for p in probes])
                self._emit(logging.WARNING, f"not bound, retrying in {self.retry_delay}s: {error}", None)
                await self._sleep(stop, self.retry_delay)
                continue
            chosen = next(p for p in probes if p.stream == target)
            first = next(p for p in probes if p.present)
            self._max_deliver = chosen.max_deliver
            self._destination = first.stream
            sub = await js.pull_subscribe_bind(durable=self.durable, stream=target)
            self.bound_stream = target
            skipped = [f"{p.stream}: {p.why}" for p in probes[: probes.index(chosen)] if not p.present]
            if target == first.stream:
                self._emit(logging.INFO, "bound" + (f" (passed over {'; '.join(skipped)})" if skipped else ""), target,
                           unprocessed=chosen.unprocessed)
            else:
                self._emit(logging.INFO, f"bound to drain the backlog before moving to {first.stream}", target,
                           unprocessed=chosen.unprocessed)
            return target, sub
        return None

    async def _serve(self, nc: Client, stop: asyncio.Event) -> None:
        js = nc.jetstream()
        sub: Any = None
        stream: str | None = None
        last_check = time.monotonic()
        try:
            while not stop.is_set():
                if nc.is_closed:
                    self._emit(logging.WARNING, "connection closed, reconnecting", stream)
                    return
                if sub is None:
                    bound = await self._bind(js, stop)
                    if bound is None:
                        return
                    stream, sub = bound
                    last_check = time.monotonic()
                try:
                    msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout)
                except asyncio.TimeoutError:  # includes nats' TimeoutError: nothing to fetch
                    msgs = []
                except (nats.js.errors.Error, nats.errors.NoRespondersError) as exc:
                    self._emit(logging.WARNING, f"fetch failed, rebinding: {_why(exc)}", stream)
                    await self._drop(sub, stream)
                    sub = None
                    self.stats["rebinds"] += 1
                    await self._sleep(stop, self.retry_delay)
                    continue
                except nats.errors.Error as exc:
                    self._emit(logging.WARNING, f"fetch failed: {type(exc).__name__}: {exc}", stream)
                    await self._sleep(stop, self.retry_delay)
                    continue
                if msgs:
                    assert stream is not None
                    for msg in msgs:
                        await self._handle(js, stream, msg)
                    continue
                # Idle: while draining a later candidate check after every empty fetch, else every few seconds.
                if stream != self._destination or time.monotonic() - last_check >= self.check_interval:
                    last_check = time.monotonic()
                    probes = await self._probes(js)
                    want = choose(probes)
                    if want == stream:
                        self._destination = next(p.stream for p in probes if p.present)
                        continue
                    here = next((p for p in probes if p.stream == stream), None)
                    if here is not None and here.present and want is not None:
                        what = "nothing left to drain here" if here.unprocessed == 0 else f"{want} has a backlog to drain first"
                        self._emit(logging.INFO, f"{what}; moving to {want}", stream)
                    else:
                        self._emit(logging.WARNING, f"{here.why if here else 'gone'}; rebinding", stream)
                    await self._drop(sub, stream)
                    sub = None
                    self.stats["rebinds"] += 1
        finally:
            if sub is not None:
                await self._drop(sub, stream)

    async def _drop(self, sub: Any, stream: str | None) -> None:
        try:
            await sub.unsubscribe()
        except Exception as exc:  # noqa: BLE001 - the subscription may already be gone with its connection
            self._emit(logging.DEBUG, f"unsubscribe: {type(exc).__name__}", stream)
        self.bound_stream = None

    # -- one message -----------------------------------------------------------------
    async def _handle(self, js: Any, stream: str, msg: Msg) -> None:
        meta = msg.metadata
        seq, delivered = meta.sequence.stream, meta.num_delivered
        try:
            result = self.handler(msg)
            if inspect.isawaitable(result):
                await result
        except PoisonMessage as exc:
            await self._dead_letter(js, stream, msg, f"poison: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried (RetryableError or not)
            kind = "retryable" if isinstance(exc, RetryableError) else f"unexpected {type(exc).__name__}"
            if self._max_deliver != -1 and delivered >= self._max_deliver:
                await self._dead_letter(js, stream, msg, f"{kind} on the last delivery ({delivered}/{self._max_deliver}): {exc}")
                return
            await msg.nak(delay=self.nak_delay)
            self.stats["nacked"] += 1
            self._emit(logging.WARNING, f"{kind} failure, nak with {self.nak_delay}s delay: {exc}", stream,
                       seq=seq, subject=msg.subject, delivered=delivered)
            return
        try:
            await msg.ack_sync()
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            self._emit(logging.WARNING, f"ack not confirmed, the server will redeliver: {type(exc).__name__}", stream,
                       seq=seq, subject=msg.subject)
            return
        self.stats["acked"] += 1
        self._emit(logging.DEBUG, "acked", stream, seq=seq, subject=msg.subject)

    async def _dead_letter(self, js: Any, stream: str, msg: Msg, reason: str) -> None:
        seq = msg.metadata.sequence.stream
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-Expected")}
        headers.update({
            H_SUBJECT: msg.subject,
            H_STREAM: stream,
            H_SEQUENCE: str(seq),
            H_DURABLE: self.durable,
            H_ERROR: reason[:1000],
            # A crash between this publish and the term republishes the same id: stored once.
            "Nats-Msg-Id": f"{stream}:{self.durable}:{seq}",
        })
        try:
            await js.publish(self.dlq_subject, msg.data, headers=headers, timeout=5.0)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            await msg.nak(delay=self.nak_delay)
            self.stats["nacked"] += 1
            self._emit(logging.ERROR, f"DLQ publish to {self.dlq_subject} failed ({_why(exc)}); nak instead of term so "
                       "nothing is lost", stream, seq=seq, subject=msg.subject)
            return
        await msg.term()
        self.stats["termed"] += 1
        self.stats["dead_lettered"] += 1
        self._emit(logging.WARNING, f"dead-lettered to {self.dlq_subject} and termed: {reason}", stream,
                   seq=seq, subject=msg.subject)
