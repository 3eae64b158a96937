"""Pulumi's plugin processes exit when the `pulumi` engine that started them is gone.

Two processes of a deploy run this project's code: the dynamic provider
(`start_if_plugin`) and the program (`start_in_program`, below).

The engine stops its plugins itself when it ends normally, but a SIGKILLed engine
leaves them running, holding connections and locks. The engine starts this process
through a shell shim (`pulumi-resource-pulumi-python` runs the SDK's provider without
exec), so the engine is the shim's parent: when the shim is reparented or gone, the
engine is gone, and this process exits, after letting a stream write that is in flight
(a subject hand-over) finish for a few seconds. A provider forked by the warm program's
zygote (toolchain/provider.py) is not the shim's child: its lifeline is its connection
to the shim, which leaves when its engine is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

#: How often the engine is looked for, and how long an in-flight stream write may finish.
POLL_INTERVAL = 0.5
FINISH_TIMEOUT = 5.0

#: The exec script's exit code for "the error has already been shown" (the engine reports a bail).
EXIT_BAIL = 32
#: How far up from the program the engine (a process named `pulumi`) is looked for.
MAX_DEPTH = 4

_started = False
_program_started = False
_lock = threading.Lock()


def parent_of(pid: int) -> int | None:
    """The parent pid of `pid` (Linux /proc), or None when unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _name_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def in_program_process() -> bool:
    """True in a program the engine runs: the SDK is connected to a real resource monitor
    (not None as on import, nor pulumi.runtime.set_mocks' stand-in as in unit tests)."""
    from pulumi.runtime import settings
    from pulumi.runtime.proto import resource_pb2_grpc

    return isinstance(settings.get_monitor(), resource_pb2_grpc.ResourceMonitorStub)


def engine_chain(pid: int | None = None) -> list[int]:
    """The ancestors of `pid` (default: this process) from its parent up to the engine, the
    nearest process named `pulumi` at most MAX_DEPTH up; without one, parent and grandparent.

    The program's tree is engine -> language host -> program, and a host may start the
    program through another process (a package manager's `run`): every link is watched.
    """
    chain: list[int] = []
    current = parent_of(os.getpid() if pid is None else pid)
    while current is not None and current > 1 and len(chain) < MAX_DEPTH:
        chain.append(current)
        if _name_of(current) == "pulumi":
            return chain
        current = parent_of(current)
    return chain[:2]


def chain_intact(chain: list[int]) -> bool:
    """True while this process's parent and every recorded link up to the engine are unchanged."""
    if not chain:
        return True  # nothing known to watch
    if os.getppid() != chain[0]:
        return False
    return all(parent_of(child) == parent for child, parent in zip(chain, chain[1:], strict=False))


def start_in_program() -> None:
    """In the program process only (a no-op anywhere else, e.g. tests importing components),
    once: exit within about POLL_INTERVAL once the engine is gone, and end quietly on SIGINT.

    Either language host may run the program: this project's adaptor
    (toolchain/langhost) already watches its engine and quiets SIGINT, but the
    official `pulumi-language-python` only health-checks its engine every few minutes and
    runs the SDK's exec script as is, where an engine cancel (SIGINT) is a
    KeyboardInterrupt traceback. So the program does both itself: on SIGINT it exits with
    the exec script's bail code (the engine reports the cancel, no traceback); a normal
    run never receives SIGINT, and the SDK installs no handler of its own.
    """
    global _program_started
    with _lock:
        if _program_started or not in_program_process():
            return
        _program_started = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _bail)
    chain = engine_chain()
    threading.Thread(target=watch_chain, args=(chain,), name="engine-lifeline", daemon=True).start()


def _bail(*_: object) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_BAIL)


def watch_chain(chain: list[int]) -> None:
    """Exit this process (code 1) within about POLL_INTERVAL once `chain` is broken: blocks."""
    stop = threading.Event()
    while not stop.wait(POLL_INTERVAL):
        if not chain_intact(chain):
            # The program writes nothing to the server itself (the provider does): exit now.
            os._exit(1)


def in_plugin_process() -> bool:
    """True in the dynamic-provider process the engine starts (`python -m pulumi.dynamic`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") in ("pulumi.dynamic.__main__", "pulumi.dynamic")


def start_if_plugin() -> None:
    """Start the watch once, in the dynamic-provider process only (a no-op anywhere else).

    The module-level call in components.pulumi.base, for a provider started as
    `python -m pulumi.dynamic` (an installed CLI's shim). It tells the process by its
    `__main__`, which a shim that runs the SDK's module through runpy swaps in only once
    that module is found: this project's shim calls `start_in_provider` itself.
    """
    if in_plugin_process():
        start_in_provider()


def start_in_provider(shim_connection: socket.socket | None = None) -> None:
    """Start the watch once: this process is the dynamic provider, the shim its parent; or, with
    `shim_connection`, a provider that the warm program's zygote forked (toolchain/provider.py),
    whose shim, the engine's child, closes that connection when it leaves with its engine."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
    if shim_connection is not None:
        threading.Thread(target=_watch_connection, args=(shim_connection,), name="engine-lifeline",
                         daemon=True).start()
        return
    shim = os.getppid()
    engine = parent_of(shim)
    threading.Thread(target=_watch, args=(shim, engine), name="engine-lifeline", daemon=True).start()


def _watch_connection(conn: socket.socket) -> None:
    try:
        while conn.recv(1 << 10):
            pass
    except OSError:
        pass
    exit_after_writes()


def _engine_alive(shim: int, engine: int | None) -> bool:
    if os.getppid() != shim:
        return False
    return engine is None or parent_of(shim) == engine


def _watch(shim: int, engine: int | None) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_INTERVAL):
        if not _engine_alive(shim, engine):
            exit_after_writes()


def exit_after_writes(code: int = 0) -> None:
    """Leave the provider process now, once a stream write in flight (a hand-over holds the
    stream write lock) has ended, or FINISH_TIMEOUT has passed.

    The engine's lifeline calls it, and so does the provider shim scripts/toolchain.sh
    installs, on the SIGINT with which the engine stops its plugins at the end of a command.
    """
    from components.migration.lock import STREAM_WRITE_LOCK

    STREAM_WRITE_LOCK.acquire(timeout=FINISH_TIMEOUT)
    os._exit(code)
