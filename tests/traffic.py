"""A publisher that keeps publishing through a migration, as the seeds' services do.

Every message carries a unique id (body and Nats-Msg-Id). A publish that gets
no responders (no stream owns the subject right now) or times out is retried
until the stream acknowledges it. The publisher records each acknowledged id,
and every stretch of time in which a subject had no stream, so tests can prove
nothing was lost and benchmarks can measure the unowned window.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError


@dataclass
class Publisher:
    url: str
    subjects: tuple[str, ...]
    interval: float = 0.01
    prefix: str = "m"
    acked: dict[str, str] = field(default_factory=dict)  # id -> subject
    #: (subject, seconds without a stream) for each retried outage
    gaps: list[tuple[str, float]] = field(default_factory=list)
    retries: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._paused = threading.Event()

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    async def _publish(self, js, subject: str, ident: str) -> None:
        outage_started: float | None = None
        while True:
            try:
                await js.publish(subject, ident.encode(), timeout=2, headers={"Nats-Msg-Id": ident})
                if outage_started is not None:
                    self.gaps.append((subject, time.monotonic() - outage_started))
                self.acked[ident] = subject
                return
            except (NoRespondersError, NoStreamResponseError, NatsTimeout, asyncio.TimeoutError, APIError):
                self.retries += 1
                if outage_started is None:
                    outage_started = time.monotonic()
                await asyncio.sleep(0.001)

    async def _run(self) -> None:
        nc = await nats.connect(self.url, max_reconnect_attempts=-1)
        js = nc.jetstream()
        try:
            for n in itertools.count():
                if self._stop.is_set():
                    break
                subject = self.subjects[n % len(self.subjects)]
                await self._publish(js, subject, f"{self.prefix}-{n}")
                await asyncio.sleep(self.interval)
        finally:
            await nc.close()


@dataclass
class OwnerWatch:
    """Asks the server, over and over, which streams own each of `subjects` (STREAM.NAMES).

    `unowned` records each answer of none as (subject, when): a subject a move leaves with
    its stream must never show one. Bounded: it stops after `limit` seconds or `max_polls`
    polls even if nobody calls stop().
    """

    url: str
    subjects: tuple[str, ...]
    limit: float = 600.0
    max_polls: int = 2_000_000
    unowned: list[tuple[str, float]] = field(default_factory=list)
    polls: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> OwnerWatch:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def since(self, mark: int) -> set[str]:
        """The subjects seen without a stream from record `mark` (an earlier len(unowned)) on."""
        return {subject for subject, _ in self.unowned[mark:]}

    async def _run(self) -> None:
        nc = await nats.connect(self.url, max_reconnect_attempts=-1)
        deadline = time.monotonic() + self.limit
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and self.polls < self.max_polls:
                for subject in self.subjects:
                    try:
                        reply = await nc.request("$JS.API.STREAM.NAMES", json.dumps({"subject": subject}).encode(),
                                                 timeout=2)
                    except (NoRespondersError, NatsTimeout, asyncio.TimeoutError):
                        continue  # no answer is no evidence either way
                    self.polls += 1
                    answer = json.loads(reply.data)
                    if "error" not in answer and not answer.get("streams"):
                        self.unowned.append((subject, time.monotonic()))
        finally:
            await nc.close()


@dataclass
class Recorder:
    """A handler for binding.Worker that remembers what it processed, and on which stream."""

    seen: dict[str, set[str]] = field(default_factory=dict)  # id -> streams it was processed on
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, msg) -> None:
        ident = msg.data.decode()
        with self.lock:
            self.seen.setdefault(ident, set()).add(msg.metadata.stream)

    def ids(self) -> set[str]:
        with self.lock:
            return set(self.seen)


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
