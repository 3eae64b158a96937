"""The dynamic-provider process exits when the `pulumi` engine that started it is gone.

The engine stops its plugins itself when it ends normally, but a SIGKILLed engine
leaves them running, holding connections and locks. The engine starts this process
through a shell shim (`pulumi-resource-pulumi-python` runs `python -m pulumi.dynamic`
without exec), so the engine is the shim's parent: when the shim is reparented or
gone, the engine is gone, and this process exits, after letting a stream write that
is in flight (a subject hand-over) finish for a few seconds.
"""

from __future__ import annotations

import os
import sys
import threading

#: How often the engine is looked for, and how long an in-flight stream write may finish.
POLL_INTERVAL = 0.5
FINISH_TIMEOUT = 5.0

_started = False
_lock = threading.Lock()


def parent_of(pid: int) -> int | None:
    """The parent pid of `pid` (Linux /proc), or None when unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def in_plugin_process() -> bool:
    """True in the dynamic-provider process the engine starts (`python -m pulumi.dynamic`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") in ("pulumi.dynamic.__main__", "pulumi.dynamic")


def start_if_plugin() -> None:
    """Start the watch once, in the dynamic-provider process only (a no-op anywhere else)."""
    global _started
    with _lock:
        if _started or not in_plugin_process():
            return
        _started = True
    shim = os.getppid()
    engine = parent_of(shim)
    threading.Thread(target=_watch, args=(shim, engine), name="engine-lifeline", daemon=True).start()


def _engine_alive(shim: int, engine: int | None) -> bool:
    if os.getppid() != shim:
        return False
    return engine is None or parent_of(shim) == engine


def _watch(shim: int, engine: int | None) -> None:
    from components import resource_common as rc

    stop = threading.Event()
    while not stop.wait(POLL_INTERVAL):
        if not _engine_alive(shim, engine):
            # A hand-over in flight holds the stream write lock: let it end first.
            rc.STREAM_WRITE_LOCK.acquire(timeout=FINISH_TIMEOUT)
            os._exit(0)
