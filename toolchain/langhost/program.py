"""How toolchain/langhost runs a Pulumi program: this file's text, embedded in the host, is
`python -u -c` code, in one of two modes.

    python -u -c PROGRAM --cold EXEC_SCRIPT ARGS...
        Run the SDK's exec script (pulumi-language-python-exec) with ARGS, as a child of the host:
        the program exits when the host that started it is gone (e.g. after the engine was
        SIGKILLed).

    python -u -c PROGRAM --warm SOCKET FD ENGINE_PID "MODULES" PROGRAM_DIR [RESIDENT SCRIPT]
        A warm program (the host's startWarm): accept on the socket the host already listens on
        at path SOCKET and handed over as descriptor FD, import MODULES (Pulumi.yaml's
        programPreload, space-separated) as the program would (PROGRAM_DIR first on sys.path),
        then wait for the host that runs the program, at most WARM_IDLE and only while the
        engine lives. That host sends one request: a 4-byte big-endian length and JSON
        {argv, set, environ, cwd}, with its standard output and error as SCM_RIGHTS descriptors.
        The answer is one JSON line: {"ok": false, "why": ...} when this process's environment
        or working directory is not the host's (the host then starts the program cold; the
        engine's secrets, _withheld, are the one difference allowed), else {"ok": true, "pid": ...}.
        The process then becomes the program: the descriptors become its standard output and
        error, its environment becomes the host's, `set` (the stack's config) joins it, and the exec
        script runs with `argv`. Every exit, os._exit included (a cancel, the program's own
        lifeline), first sends {"exit": code}; and the program ends when the host's end of the
        socket closes, as a cold program ends when its host is gone.

A warm program also forks, once its modules are imported and before it takes a run, the
provider zygote (`_fork_provider_zygote`): the dynamic-provider shim of scripts/toolchain.sh
hands it the provider the engine starts, and it forks one with the SDK and the program's
modules already loaded (toolchain/provider.py, which EVENTBUS_PROVIDER_SCRIPT names, says how;
EVENTBUS_PROVIDER_FORK=0 turns it off). Its socket is bound as the warm program starts
(`_bind_provider_zygote`), so a provider the engine starts while the imports run waits for
them. It never holds the stack's config: it is forked before the run brings it. It serves every
provider of its engine's command, one fork each, and ends when the engine is gone or after
ZYGOTE_IDLE without one.

With RESIDENT (a socket path, and SCRIPT, the digest of this file the host embeds), the warm
program also forks, after the zygote, the resident (`_fork_resident`): a process that keeps the
imports for the commands that follow, in a process group of its own with no standard streams,
and listens at RESIDENT (0600; bound under another name and renamed over it, so that of two
residents starting at once one whole one stays). It does not start when a file it would stamp
changed from shortly before the imports began (an edit saved while they ran). The next command's
host asks it first (main.go's askResident): a 4-byte big-endian length and JSON {path, engine,
environ, cwd, script}, with the socket the host listens on at `path` as an SCM_RIGHTS
descriptor. The resident refuses ({"ok": false, "why": ...}) when the request is malformed, or
the host embeds another version of this file, or a file it loaded a module from (or a package's
directory, a directory on sys.path, a .pth file there, pyvenv.cfg, the interpreter) has changed
since (mtime, ctime, size or inode: it then leaves, and the host's new warm program leaves a new
resident), or the working directory differs, or the host is in another session (a provider must
join its engine's process group), or the environment differs outside the engine's and the host's
own variables (toolchain/provider.py's rule) and the secrets, or the host's process settings do
(`_process_profile`: namespaces, cgroup, hard limits, umask, groups, CPU affinity, nice). Else it
forks (twice, so that the warm program is nobody's child) a warm program for that engine, which
answers {"ok": true, "pid": ...}, takes the socket only once the host says "go" (a host that gave
up has closed the connection: it then leaves), and then is what a host's own warm program is
once its imports are done: zygote, wait for the run, run. It never holds the engine's secrets:
the host withholds them (`_withheld`: the passphrase, the access token, the backend URL, names
with PASSWORD, TOKEN, SECRET, CREDENTIAL... or ending in _KEY, URLs with a password) from the
warm programs it starts, and so from the resident, and hands them over with the run. It ends
after RESIDENT_IDLE without a request (EVENTBUS_RESIDENT_IDLE, seconds), on SIGTERM, or when its
socket is removed or taken by a newer resident, or its working directory is gone; as it starts, it
removes this user's resident sockets that nobody listens on (a killed resident's). `ps` shows it
as `warm-resident`, the warm programs it forks as `warm-forked`. EVENTBUS_RESIDENT=0 turns it off;
it is off by default under CI (the CI variable set, and not 0 or false).

Either way the run itself (`run`) is the same. An engine cancel (SIGINT) ends the program
quietly, with the exec script's bail code, instead of a KeyboardInterrupt traceback. The SDK
sends each debug-level log (four per resource: "registering resource", ...) as a blocking RPC
from the program's one event-loop thread, about a millisecond each, shown only with --debug:
those are sent without waiting, and all awaited at the end, or, when the host says the engine
neither shows nor records them (EVENTBUS_DEBUG_LOGS=0: no --debug, -v or --event-log), not
sent at all. Other severities, and logs tied to a resource, go through the SDK's own path
unchanged. When the exec script is done (it ends with
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
#: How long a provider zygote waits for the next provider before it ends.
ZYGOTE_IDLE = 600.0
#: The longest request a warm program or zygote reads, and how long a zygote waits for one.
MAX_REQUEST = 1 << 20
REQUEST_TIMEOUT = 5.0
#: What `ps` shows as the command of a provider zygote, and of a provider it forked.
ZYGOTE_NAME = "provider-zygote"
FORKED_PROVIDER_NAME = "provider-forked"
#: How long a resident waits for the next command before it ends (EVENTBUS_RESIDENT_IDLE, seconds,
#: overrides it), and what `ps` shows as its command, and as that of a warm program it forked.
RESIDENT_IDLE = 900.0
RESIDENT_NAME = "warm-resident"
WARM_NAME = "warm-forked"
#: How long before its imports start a file may have changed for a resident to trust them (file
#: times are a few milliseconds coarse).
STAMP_SLACK_NS = 100_000_000
#: What a language host withholds from the warm programs it prepares (and so from a resident), and
#: hands over with the run (_withheld, main.go's isWithheld): these names, names with these parts
#: or ending in _KEY, and URLs with a password. Only they may differ between the host that
#: prepared a warm program and the one that runs it.
WITHHELD_NAMES = frozenset({"PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_ACCESS_TOKEN",
                            "PULUMI_BACKEND_URL"})
WITHHELD_PARTS = ("PASSWORD", "PASSWD", "PASSPHRASE", "TOKEN", "SECRET", "CREDENTIAL", "CREDS", "NKEY")


def _withheld(name, value):
    """Whether the environment variable `name`=`value` is a secret the host withholds."""
    upper = name.upper()
    if name in WITHHELD_NAMES or upper.endswith("_KEY") or any(part in upper for part in WITHHELD_PARTS):
        return True
    scheme = value.find("://")
    if scheme < 0:
        return False
    rest = value[scheme + 3:]
    at, slash = rest.find("@"), rest.find("/")
    return at >= 0 and (slash < 0 or at < slash)


def _run(argv):
    """Run the exec script, argv[0], with the rest as its arguments, then leave with its code."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_BAIL))
    import pulumi.log as plog
    from pulumi.runtime.proto import engine_pb2 as epb

    sync_log, sent = plog._log, []

    shown = os.environ.get("EVENTBUS_DEBUG_LOGS") != "0"

    def log(engine, severity, message, resource, stream_id, ephemeral):
        if severity != epb.DEBUG or resource is not None or not hasattr(engine.Log, "future"):
            return sync_log(engine, severity, message, resource, stream_id, ephemeral)
        if not shown:
            return None
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


def _engine_alive(engine):
    """True while the engine's process is there and not a zombie its parent has yet to reap."""
    try:
        with open(f"/proc/{engine}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _send(conn, message):
    import json

    conn.sendall((json.dumps(message) + "\n").encode())


def _report_exit_on(conn):
    """Make every exit of this process, os._exit included, first send {"exit": code} on conn."""
    raw_exit = os._exit
    report = threading.Lock()

    def exit_reporting(code):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - leaving anyway
                pass
        if report.acquire(blocking=False):
            try:
                _send(conn, {"exit": int(code)})
            except Exception:  # noqa: BLE001 - the other end then reports a process that died
                pass
        raw_exit(code)

    os._exit = exit_reporting


def _receive(conn, fd_count, deadline=None):
    """One request: a 4-byte big-endian length and a JSON object (at most MAX_REQUEST bytes), with
    fd_count SCM_RIGHTS descriptors, complete before `deadline` (time.monotonic()) when given.
    (None, []) and no descriptor left open when it is not that."""
    import json
    import socket
    import struct
    import time

    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, fd_count)
    try:
        if len(data) < 4 or len(fds) != fd_count:
            raise ValueError("not a request")
        need = struct.unpack(">I", data[:4])[0]
        if need > MAX_REQUEST:
            raise ValueError("request too long")
        data = data[4:]
        while len(data) < need:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("request too slow")
            chunk = conn.recv(1 << 16)
            if not chunk:
                raise ValueError("request cut short")
            data += chunk
        request = json.loads(data)
        if not isinstance(request, dict):
            raise ValueError("not a JSON object")
        return request, fds
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        return None, []


def _bind_provider_zygote(engine):
    """The provider zygote's socket for this engine (see the module's docstring), listening
    already, so that a provider the engine starts while this process still imports waits for it:
    (listener, path, the provider script's namespace). None when it is off, or one already serves
    this engine, interpreter and directory (the preview's, when the update's warm program starts)."""
    import socket

    if os.environ.get("EVENTBUS_PROVIDER_FORK", "1") == "0":
        return None
    provider = _provider_script()
    if provider is None:
        return None  # no zygote: every provider starts as the shim's own process
    path = provider["zygote_path"](engine, sys.prefix, os.getcwd())
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return None  # one is there
    except OSError:
        pass
    finally:
        probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)  # a zygote's whose engine had this pid
    except OSError:
        pass
    umask = os.umask(0o177)  # the socket is its user's alone (0600)
    try:
        listener.bind(path)
        listener.listen(8)
    except OSError:
        listener.close()
        return None
    finally:
        os.umask(umask)
    return listener, path, provider


def _provider_script():
    """The namespace of the provider script EVENTBUS_PROVIDER_SCRIPT names, or None."""
    script = os.environ.get("EVENTBUS_PROVIDER_SCRIPT", "")
    if not script:
        return None
    provider = {"__name__": "eventbus_provider", "__file__": script}
    try:
        with open(script, encoding="utf-8") as fh:
            exec(compile(fh.read(), script, "exec"), provider)  # noqa: S102 - the toolchain's own file
    except Exception:  # noqa: BLE001 - the caller goes without
        return None
    return provider


def _fork_provider_zygote(zygote, engine, inherited):
    """Fork the zygote off this process, with what it has imported; `inherited`: descriptors
    the zygote closes. This process keeps no part of it."""
    listener, path, provider = zygote
    if os.fork():
        listener.close()
        return
    try:
        for fd in inherited:
            os.close(fd)
        _zygote(listener, path, engine, provider)
    finally:
        os._exit(0)


def _name_process(name):
    """Name this process for `ps -o comm`, /proc/PID/comm (15 characters at most)."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as fh:
            fh.write(name)
    except OSError:
        pass


def _zygote(listener, path, engine, provider):
    _name_process(ZYGOTE_NAME)
    ours = os.stat(path).st_ino
    _sweep_sockets(provider)
    children = set()

    def going():
        for pid in list(children):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    children.discard(pid)
            except ChildProcessError:
                children.discard(pid)
        return _engine_alive(engine)

    def serve(conn):
        pid = _serve_request(conn, listener, provider)
        if pid:
            children.add(pid)
        return False

    _serve_until(listener, path, ours, ZYGOTE_IDLE, going, serve)


def _serve_until(listener, path, ours, idle, going, serve):
    """Accept on `listener`, POLL_INTERVAL at a time, and hand each connection to serve(conn), which
    closes after it, until `idle` seconds pass without one, going() is false, or serve returns True
    (a serve that fails ends its connection only); then remove `path` when the socket there is
    still this one (inode `ours`)."""
    import time

    listener.settimeout(POLL_INTERVAL)
    last = time.monotonic()
    try:
        while going() and time.monotonic() - last < idle:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            try:
                if serve(conn):
                    break
            except Exception:  # noqa: BLE001 - one bad request ends that request, not the server
                pass
            finally:
                conn.close()
    except OSError:
        pass
    finally:
        try:
            if os.stat(path).st_ino == ours:
                os.unlink(path)
        except OSError:
            pass


def _serve_request(conn, listener, provider):
    """Answer one shim: refuse it, or fork its provider (the child's pid). The shim's descriptors
    are closed here whatever happens: held open, they would keep the engine waiting for the end of
    its plugin's output."""
    import socket
    import struct
    import time

    peer = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if peer[1] != os.getuid():
        return 0
    conn.settimeout(REQUEST_TIMEOUT)
    request, fds = _receive(conn, 3, deadline=time.monotonic() + REQUEST_TIMEOUT)
    try:
        if request is None:
            return 0
        why = _refusal(request, provider)
        if why:
            _send(conn, {"ok": False, "why": why})
            return 0
        pid = os.fork()
        if pid == 0:
            listener.close()
            _become_provider(conn, fds, request, provider)
        return pid
    finally:
        for fd in fds:
            os.close(fd)


def _sweep_sockets(provider):
    """Remove this user's zygote sockets whose engine is gone (a zygote that was killed leaves its
    socket behind)."""
    import glob

    pattern = provider["zygote_path"]("*", "", "").rsplit("-", 1)[0] + "-*.sock"
    for name in glob.glob(pattern):
        try:
            engine = int(os.path.basename(name).split("-")[2])
            if os.lstat(name).st_uid == os.getuid() and not _engine_alive(engine):
                os.unlink(name)
        except (OSError, ValueError, IndexError):
            continue


def _refusal(request, provider):
    """Why this zygote does not fork the provider the request describes, or ''."""
    shapes = (("cwd", str), ("environ", dict), ("argv", list))
    if not all(isinstance(request.get(key), kind) for key, kind in shapes):
        return "malformed request"
    if os.path.realpath(request["cwd"]) != os.path.realpath(os.getcwd()):
        return "working directory differs"
    differ = provider["environment_differs"](dict(os.environ), request["environ"], _withheld)
    if differ:
        return "environment differs: " + ", ".join(differ[:5])
    if os.path.realpath(str(request.get("script"))) != os.path.realpath(provider["__file__"]):
        return "another provider script"
    return ""


def _become_provider(conn, fds, request, provider):
    """In the zygote's child: answer the shim with this pid, and once the shim says "go" (a shim
    that gave up waiting has closed the connection instead: then leave, touching none of its
    streams), join the shim's process group (the engine signals the group), take its standard
    streams and environment, and serve."""
    import signal

    signal.signal(signal.SIGINT, provider["_stop"])
    try:
        _name_process(FORKED_PROVIDER_NAME)
        conn.settimeout(REQUEST_TIMEOUT)
        _send(conn, {"ok": True, "pid": os.getpid()})
        if conn.recv(3) != b"go\n":
            os._exit(0)
        conn.settimeout(None)
    except OSError:
        os._exit(0)
    try:
        try:
            os.setpgid(0, int(request.get("pgid", 0)))
        except (OSError, ValueError, TypeError):
            pass
        for fd, target in zip(fds, (0, 1, 2), strict=True):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["environ"])
        _report_exit_on(conn)
        provider["serve"](request["argv"], shim_connection=conn)
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else int(exc.code is not None))
    except BaseException:  # noqa: BLE001 - reported through the exit code, as a provider that died
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _cold(argv):
    parent = os.getppid()

    def watch():
        while not threading.Event().wait(POLL_INTERVAL):
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    _run(argv)


def _warm(path, fd, engine, names, program_dir, resident, script):
    environ = dict(os.environ)
    import importlib
    import socket
    import time

    since = time.time_ns() - STAMP_SLACK_NS  # a file changed after this may not be what was imported

    zygote = _bind_provider_zygote(engine)
    server = socket.socket(fileno=fd)
    server.setblocking(True)
    taken, dropped = _wait_for_run(engine, [path] + ([zygote[1]] if zygote else []))
    sys.path.insert(0, program_dir)  # as runpy.run_path puts it for the program: the same modules
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the program reports it when it imports the module itself
            pass
    if sys.path and sys.path[0] == program_dir:
        del sys.path[0]
    if zygote:
        _fork_provider_zygote(zygote, engine, [server.fileno()])
        dropped[1:] = []
    if resident:
        _fork_resident(resident, environ, script, since, [server.fileno()])
    _take_run(server, environ, taken, dropped)


def _wait_for_run(engine, dropped):
    """Start the watch of a warm program that has yet to take its run: once the engine is gone, or
    WARM_IDLE has passed, remove the paths in `dropped` and leave. (taken, dropped): set `taken`
    when the run is taken; `dropped` may be changed until then."""
    import time

    raw_exit = os._exit
    taken = threading.Event()

    def idle():
        deadline = time.monotonic() + WARM_IDLE
        while not taken.wait(0.1):
            if not _engine_alive(engine) or time.monotonic() > deadline:
                _unlink(dropped)
                raw_exit(0)

    threading.Thread(target=idle, daemon=True).start()
    return taken, dropped


def _unlink(paths):
    for name in paths:
        try:
            os.unlink(name)
        except OSError:
            pass


def _take_run(server, environ, taken, dropped):
    """Accept the host that runs the program, on `server`, and become the program, or refuse it
    when its environment (`environ`: the one this program was prepared in), outside _withheld, or
    its working directory is not this process's."""
    raw_exit = os._exit
    conn, _ = server.accept()
    taken.set()
    _unlink(dropped)
    server.close()
    request, fds = _receive(conn, 2)
    if request is None:
        raw_exit(1)
    theirs = dict(request["environ"])
    differ = sorted(k for k in set(theirs) | set(environ) if theirs.get(k) != environ.get(k)
                    and not _withheld(k, theirs.get(k) or environ.get(k) or ""))
    if differ:
        _send(conn, {"ok": False, "why": "environment differs: " + ", ".join(differ[:5])})
        raw_exit(0)
    if os.path.realpath(request["cwd"]) != os.path.realpath(os.getcwd()):
        _send(conn, {"ok": False, "why": "working directory differs"})
        raw_exit(0)
    for fd, target in zip(fds, (1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(theirs)
    os.environ.update(request["set"])
    _send(conn, {"ok": True, "pid": os.getpid()})
    _report_exit_on(conn)

    def watch():
        try:
            while conn.recv(1 << 10):
                pass
        except OSError:
            pass
        raw_exit(1)

    threading.Thread(target=watch, daemon=True).start()
    _run(request["argv"])


def _fork_resident(path, environ, script, since, inherited):
    """Fork the resident (see the module's docstring) off this warm program, with what it has
    imported, detached from it: its own process group, its standard streams /dev/null, and
    `inherited` (descriptors) closed. This process waits only for the intermediate fork."""
    try:
        child = os.fork()
    except OSError:
        return  # no resident this time
    if child:
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
        return
    try:
        if os.fork():
            os._exit(0)
        os.setpgid(0, 0)
        for fd in inherited:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.close(null)
        _resident(path, environ, script, since)
    except BaseException:  # noqa: BLE001 - no resident: every command starts its own warm program
        pass
    finally:
        os._exit(0)


def _module_stamps():
    """What the resident's modules were loaded from: {path: stamp (_stamp)}, for every imported
    module's file, every package's directory (a module added beside them), every directory on
    sys.path but the working directory's (an install adds to it) and the .pth files there, the
    virtualenv's pyvenv.cfg, and the interpreter."""
    paths = {sys.executable, os.path.join(sys.prefix, "pyvenv.cfg")}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if isinstance(name, str) and name:
            paths.add(os.path.abspath(name))
        for folder in getattr(module, "__path__", None) or ():
            if isinstance(folder, str) and folder:
                paths.add(os.path.abspath(folder))
    cwd = os.getcwd()
    for folder in sys.path:
        if not folder or os.path.abspath(folder) == cwd or not os.path.isdir(folder):
            continue
        paths.add(os.path.abspath(folder))
        try:
            paths.update(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".pth"))
        except OSError:
            pass
    return {name: _stamp(name) for name in paths}


def _stamp(name):
    """(mtime_ns, ctime_ns, size, inode), or None when there is no such file; ctime, which no tool
    sets back, catches a rewrite that keeps the size and the modification time."""
    try:
        st = os.stat(name)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


def _process_profile(pid):
    """What process `pid` has that a process it starts inherits besides its environment and
    working directory, and that a warm program the resident forks takes from the resident instead:
    namespaces, cgroup, hard resource limits (a Go process raises its own soft ones), umask,
    groups, CPU affinity and nice. What cannot be read is left out."""
    profile = {}
    base = f"/proc/{pid}"
    for ns in ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts"):
        try:
            profile["namespace " + ns] = os.readlink(f"{base}/ns/{ns}")
        except OSError:
            pass
    try:
        with open(f"{base}/cgroup", encoding="utf-8") as fh:
            profile["cgroup"] = fh.read()
        with open(f"{base}/limits", encoding="ascii") as fh:
            for line in fh.read().splitlines()[1:]:
                values = line[26:].split()
                if len(values) >= 2:
                    profile["hard limit " + line[:26].strip()] = values[1]
        with open(f"{base}/status", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("Umask", "Groups", "Cpus_allowed_list"):
                    profile[key] = value.strip()
        with open(f"{base}/stat", encoding="ascii", errors="replace") as fh:
            profile["nice"] = fh.read().rsplit(")", 1)[1].split()[16]
    except (OSError, IndexError):
        pass
    return profile


def _resident(path, environ, script, since):
    """Serve warm programs from this process's imports until RESIDENT_IDLE passes without a request,
    the socket at `path` is no longer this one's (removed, or replaced by a newer resident), its
    working directory (the project's) is gone, or a module it loaded has changed on disk (then it
    refuses and leaves)."""
    import signal
    import socket

    _name_process(RESIDENT_NAME)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave through _serve_until, which removes the socket
    provider = _provider_script()
    if provider is None:
        return
    try:
        idle = float(os.environ.get("EVENTBUS_RESIDENT_IDLE") or RESIDENT_IDLE)
    except ValueError:
        idle = RESIDENT_IDLE
    stamps = _module_stamps()
    if any(stamp and max(stamp[0], stamp[1]) >= since for stamp in stamps.values()):
        return  # changed while the warm program imported: what it holds may not be what is there
    profile = _process_profile(os.getpid())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fresh = f"{path}.{os.getpid()}"
    _unlink([fresh])
    umask = os.umask(0o177)  # the socket is its user's alone (0600)
    try:
        listener.bind(fresh)
        listener.listen(8)
    finally:
        os.umask(umask)
    ours = os.stat(fresh).st_ino
    os.rename(fresh, path)  # at once: another resident starting now replaces it whole, or is replaced
    _sweep_residents(path)
    cwd = os.getcwd()
    _serve_until(listener, path, ours, idle,
                 lambda: (_stamp(path) or (0, 0, 0, 0))[3] == ours and os.path.isdir(cwd),
                 lambda conn: _serve_resident(conn, listener, environ, script, stamps, profile, provider) == "stale")


def _sweep_residents(path):
    """Remove this user's resident sockets, beside `path`, that nobody listens on any more (a
    resident that was killed leaves its socket behind)."""
    import glob
    import socket
    import stat

    folder, name = os.path.split(path)
    for other in glob.glob(os.path.join(glob.escape(folder), name.rsplit("-", 1)[0] + "-*.sock")):
        if other == path:
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            st = os.lstat(other)
            if st.st_uid != os.getuid() or not stat.S_ISSOCK(st.st_mode):
                continue
            probe.connect(other)
        except ConnectionRefusedError:
            try:
                os.unlink(other)
            except OSError:
                pass
        except OSError:
            pass
        finally:
            probe.close()


def _serve_resident(conn, listener, environ, script, stamps, profile, provider):
    """Answer one language host: refuse it ({"ok": false, "why": ...}; "stale" when a module changed
    on disk), or fork its warm program, which answers {"ok": true, "pid": ...} itself."""
    import socket
    import struct
    import time

    peer = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if peer[1] != os.getuid():
        return ""
    conn.settimeout(REQUEST_TIMEOUT)
    request, fds = _receive(conn, 1, deadline=time.monotonic() + REQUEST_TIMEOUT)
    try:
        if request is None:
            return ""
        why, stale = _resident_refusal(request, peer[0], environ, script, stamps, profile, provider)
        if why:
            _send(conn, {"ok": False, "why": why})
            return "stale" if stale else ""
        child = os.fork()
        if child == 0:
            try:
                listener.close()
                if os.fork():
                    os._exit(0)
                _warm_from_resident(conn, fds[0], request)
            finally:
                os._exit(1)
        os.waitpid(child, 0)
        return ""
    finally:
        for fd in fds:
            os.close(fd)


def _resident_refusal(request, host, environ, script, stamps, profile, provider):
    """(why, stale): why the resident does not fork the warm program the request describes, or ''
    and False; stale when it never will again (a module changed on disk, another program.py)."""
    shapes = (("cwd", str), ("environ", dict), ("path", str), ("engine", int), ("script", str))
    if not all(isinstance(request.get(key), kind) for key, kind in shapes):
        return "malformed request", False
    if request["script"] != script:
        return "another version of the language host", True
    changed = next((name for name, stamp in stamps.items() if _stamp(name) != stamp), None)
    if changed:
        return "changed since it was imported: " + changed, True
    if os.path.realpath(request["cwd"]) != os.path.realpath(os.getcwd()):
        return "working directory differs", False
    try:
        if os.getsid(host) != os.getsid(0):
            return "another session", False  # its providers could not join their engine's process group
    except OSError:
        return "the host is gone", False
    differ = provider["environment_differs"](environ, request["environ"], _withheld)
    if differ:
        return "environment differs: " + ", ".join(differ[:5]), False
    theirs = _process_profile(host)
    differ = sorted(k for k in set(profile) & set(theirs) if profile[k] != theirs[k])
    if differ:
        return "process settings differ: " + ", ".join(differ[:5]), False
    return "", False


def _warm_from_resident(conn, fd, request):
    """In the resident's grandchild: become the warm program the host asked for, as one the host
    started would be once its imports are done (in a process group of its own, with the host's
    environment), on the socket `fd` the host listens on, for its engine."""
    import signal
    import socket

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the resident's own
    os.setpgid(0, 0)
    _name_process(WARM_NAME)
    try:  # a host that gave up waiting has closed the connection: then leave, using nothing of it
        conn.settimeout(REQUEST_TIMEOUT)
        _send(conn, {"ok": True, "pid": os.getpid()})
        if conn.recv(3) != b"go\n":
            os._exit(0)
    except OSError:
        os._exit(0)
    conn.close()
    os.environ.clear()
    os.environ.update(request["environ"])
    environ = dict(os.environ)
    engine = request["engine"]
    zygote = _bind_provider_zygote(engine)
    server = socket.socket(fileno=fd)
    server.setblocking(True)
    taken, dropped = _wait_for_run(engine, [request["path"]] + ([zygote[1]] if zygote else []))
    if zygote:
        _fork_provider_zygote(zygote, engine, [server.fileno()])
        dropped[1:] = []
    _take_run(server, environ, taken, dropped)


def _main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "--cold":
        _cold(args)
    elif mode == "--warm":
        resident, script = (args[5], args[6]) if len(args) > 6 else ("", "")
        _warm(args[0], int(args[1]), int(args[2]), args[3].split(), args[4], resident, script)
    else:
        sys.exit(f"toolchain/langhost program.py: unknown mode {mode!r}")


_main()
