"""One listing of the server serves the reads of a refresh, instead of one request per resource.

`pulumi refresh` (and `preview --refresh`, `up --refresh`) asks the provider process to
read every resource of the stack at once. The first stream read lists every stream
(`$JS.API.STREAM.LIST`, a page per 256 streams) and the first read of a durable lists the
durables of its stream (`$JS.API.CONSUMER.LIST.<stream>`); the reads that follow, on any
of the provider's worker threads, are answered from those listings.

Never stale past its own process's writes, never a false "gone":
* a listing serves reads for LIFETIME seconds after it was taken, and any create, update
  or delete in this process drops every listing (before and after its write);
* an object the listing does not hold is read directly before read() reports it gone
  (created since, or left out of the listing, as a server does with a stream whose
  info it cannot gather in time).
Only read() uses it; check, diff, create, update and delete always ask the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from components.jetstream.errors import StreamNotFound

if TYPE_CHECKING:
    from components.jetstream.client import JetStream

#: How long one listing answers reads: a refresh asks for every resource at once.
LIFETIME = 2.0


class Snapshot:
    """Listings per connection (the settings' cache key), taken once and shared by the threads."""

    def __init__(self, lifetime: float = LIFETIME) -> None:
        self.lifetime = lifetime
        self._lock = threading.Lock()  # guards the dicts; a listing is taken under its own key's lock
        self._listing_locks: dict[object, threading.Lock] = {}
        #: Counts drops: a listing whose taking a drop overlapped is not kept.
        self._generation = 0
        self._streams: dict[str, tuple[float, dict[str, dict]]] = {}
        self._consumers: dict[tuple[str, str], tuple[float, dict[str, dict]]] = {}

    def _fresh(self, cache: dict, key: object) -> dict[str, dict] | None:
        taken = cache.get(key)
        return taken[1] if taken and time.monotonic() - taken[0] < self.lifetime else None

    def _listing_lock(self, key: object) -> threading.Lock:
        with self._lock:
            return self._listing_locks.setdefault(key, threading.Lock())

    def _listing(self, cache: dict, key: object, take: Callable[[], dict[str, dict]]) -> dict[str, dict]:
        """The fresh listing of `cache` under `key`, taken by `take` when there is none: one
        thread takes it while the others wait for it, and listings of other keys (the durables
        of other streams) are taken at the same time."""
        with self._lock:
            listing = self._fresh(cache, key)
        if listing is not None:
            return listing
        with self._listing_lock((id(cache), key)):
            with self._lock:
                listing, generation = self._fresh(cache, key), self._generation
            if listing is None:
                listing = take()
                with self._lock:
                    if generation == self._generation:
                        cache[key] = (time.monotonic(), listing)
        return listing

    def stream_info(self, js: JetStream, name: str) -> dict | None:
        listing = self._listing(self._streams, js.settings.cache_key(),
                                lambda: {info["config"]["name"]: info for info in js.stream_infos()})
        return listing.get(name) or js.stream_info(name)

    def consumer_info(self, js: JetStream, stream: str, durable: str) -> dict | None:
        try:
            listing = self._listing(self._consumers, (js.settings.cache_key(), stream),
                                    lambda: {info["name"]: info for info in js.consumer_infos(stream)})
        except StreamNotFound:
            return None  # no stream: no durable on it
        return listing.get(durable) or js.consumer_info(stream, durable)

    def drop(self) -> None:
        """Forget every listing (a write in this process may have changed what they say)."""
        with self._lock:
            self._generation += 1
            self._streams.clear()
            self._consumers.clear()

    @contextmanager
    def dropped(self) -> Iterator[None]:
        """Around a write: no listing taken before it, or while it runs, outlives it."""
        self.drop()
        try:
            yield
        finally:
            self.drop()


#: The provider process's one snapshot.
SNAPSHOT = Snapshot()
