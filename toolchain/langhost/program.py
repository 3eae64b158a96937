"""How toolchain/langhost runs a Pulumi program: this file's text, embedded in the host, is
`python -u -c` code, in one of two modes.

    python -u -c PROGRAM --cold EXEC_SCRIPT ARGS...
        Run the SDK's exec script (pulumi-language-python-exec) with ARGS, as a child of the host:
        the program exits when the host that started it is gone (e.g. after the engine was
        SIGKILLed).

    python -u -c PROGRAM --warm SOCKET FD ENGINE_PID "MODULES" PROGRAM_DIR
        A warm program (the host's startWarm): accept on the socket the host already listens on
        at path SOCKET and handed over as descriptor FD, import MODULES (Pulumi.yaml's
        programPreload, space-separated) as the program would (PROGRAM_DIR first on sys.path),
        then wait for the host that runs the program, at most WARM_IDLE and only while the
        engine lives. That host sends one request: a 4-byte big-endian length and JSON
        {argv, set, environ, cwd}, with its standard output and error as SCM_RIGHTS descriptors.
        The answer is one JSON line: {"ok": false, "why": ...} when this process's environment
        or working directory is not the host's (the host then starts the program cold), else
        {"ok": true, "pid": ...}. The process then becomes the program: the descriptors become its
        standard output and error, `set` (the stack's config) joins its environment, and the exec
        script runs with `argv`. Every exit, os._exit included (a cancel, the program's own
        lifeline), first sends {"exit": code}; and the program ends when the host's end of the
        socket closes, as a cold program ends when its host is gone.

Either way the run itself (`run`) is the same. An engine cancel (SIGINT) ends the program
quietly, with the exec script's bail code, instead of a KeyboardInterrupt traceback. The SDK
sends each debug-level log (four per resource: "registering resource", ...) as a blocking RPC
from the program's one event-loop thread, about a millisecond each, shown only with --debug:
those are sent without waiting, and all awaited at the end. Other severities, and logs tied to
a resource, go through the SDK's own path unchanged. When the exec script is done (it ends with
sys.exit, after waiting for every RPC and closing its event loop), the process flushes and
leaves with os._exit: the interpreter's own teardown (module finalisation, the gRPC runtime's
shutdown) adds 0.1-0.2 s to every command and does nothing the engine needs.

It runs as `-c` code: the standard library and the SDK only, and the program itself runs in a
namespace of its own (runpy.run_path).
"""

import os
import runpy
import signal
import sys
import threading

#: The exec script's exit code for "the error has already been shown" (main.go's exitBail).
EXIT_BAIL = 32
#: How often a program checks that the host that started it is there (main.go's pollInterval).
POLL_INTERVAL = 0.5
#: How long, at the end, each debug log still in flight is waited for.
LOG_FLUSH_TIMEOUT = 10.0
#: How long a warm program waits for the host that runs it.
WARM_IDLE = 60.0


def _run(argv):
    """Run the exec script, argv[0], with the rest as its arguments, then leave with its code."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_BAIL))
    import pulumi.log as plog
    from pulumi.runtime.proto import engine_pb2 as epb

    sync_log, sent = plog._log, []

    def log(engine, severity, message, resource, stream_id, ephemeral):
        if severity != epb.DEBUG or resource is not None or not hasattr(engine.Log, "future"):
            return sync_log(engine, severity, message, resource, stream_id, ephemeral)
        if len(sent) >= 512:
            sent[:] = [f for f in sent if not f.done()]
        sent.append(engine.Log.future(epb.LogRequest(
            severity=severity, message=message, urn="", streamId=stream_id or 0, ephemeral=ephemeral)))
        return None

    plog._log = log
    sys.argv = list(argv)
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    for future in sent:
        try:
            future.result(timeout=LOG_FLUSH_TIMEOUT)
        except Exception:  # noqa: BLE001 - a debug log lost does not fail the program
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _cold(argv):
    parent = os.getppid()

    def watch():
        while not threading.Event().wait(POLL_INTERVAL):
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    _run(argv)


def _warm(path, fd, engine, names, program_dir):
    environ = dict(os.environ)
    import importlib
    import json
    import socket
    import struct
    import time

    raw_exit = os._exit

    def drop():
        try:
            os.unlink(path)
        except OSError:
            pass

    def send(conn, message):
        conn.sendall((json.dumps(message) + "\n").encode())

    server = socket.socket(fileno=fd)
    server.setblocking(True)
    taken = threading.Event()

    def engine_alive():
        try:
            os.kill(engine, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return True

    def idle():
        deadline = time.monotonic() + WARM_IDLE
        while not taken.wait(0.1):
            if not engine_alive() or time.monotonic() > deadline:
                drop()
                raw_exit(0)

    threading.Thread(target=idle, daemon=True).start()
    sys.path.insert(0, program_dir)  # as runpy.run_path puts it for the program: the same modules
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the program reports it when it imports the module itself
            pass
    if sys.path and sys.path[0] == program_dir:
        del sys.path[0]
    conn, _ = server.accept()
    taken.set()
    drop()
    server.close()
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 2)
    if len(data) < 4 or len(fds) != 2:
        raw_exit(1)
    need = struct.unpack(">I", data[:4])[0]
    data = data[4:]
    while len(data) < need:
        chunk = conn.recv(1 << 16)
        if not chunk:
            raw_exit(1)
        data += chunk
    request = json.loads(data)
    theirs = dict(request["environ"])
    differ = sorted(k for k in set(theirs) | set(environ) if theirs.get(k) != environ.get(k))
    if differ:
        send(conn, {"ok": False, "why": "environment differs: " + ", ".join(differ[:5])})
        raw_exit(0)
    if os.path.realpath(request["cwd"]) != os.path.realpath(os.getcwd()):
        send(conn, {"ok": False, "why": "working directory differs"})
        raw_exit(0)
    for fd, target in zip(fds, (1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.update(request["set"])
    send(conn, {"ok": True, "pid": os.getpid()})
    report = threading.Lock()

    def exit_reporting(code):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - leaving anyway
                pass
        if report.acquire(blocking=False):
            try:
                send(conn, {"exit": int(code)})
            except Exception:  # noqa: BLE001 - the host then reports a program that died
                pass
        raw_exit(code)

    os._exit = exit_reporting

    def watch():
        try:
            while conn.recv(1 << 10):
                pass
        except OSError:
            pass
        raw_exit(1)

    threading.Thread(target=watch, daemon=True).start()
    _run(request["argv"])


def _main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "--cold":
        _cold(args)
    elif mode == "--warm":
        _warm(args[0], int(args[1]), int(args[2]), args[3].split(), args[4])
    else:
        sys.exit(f"toolchain/langhost program.py: unknown mode {mode!r}")


_main()
