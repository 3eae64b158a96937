"""The dynamic-provider plugin of the build toolchain: what `pulumi-resource-pulumi-python`, the
shim scripts/toolchain.sh installs, runs as `python -u -c` code (standard library and SDK only,
with the project's directory on sys.path as the engine's working directory).

It is the provider one of two ways:

- **Forked.** When this engine's warm program (toolchain/langhost/program.py) has imported the
  SDK and the program's modules, it forks a provider zygote that listens on a socket of its own
  (`zygote_path`). The shim hands it this process's arguments, environment, working directory
  and standard streams (a 4-byte big-endian length, JSON {argv, environ, cwd, script, pgid}, and
  descriptors 0-2 as SCM_RIGHTS). The zygote refuses ({"ok": false, "why": ...}) or forks a
  provider, which answers {"ok": true, "pid": ...} and waits for the shim's "go" line before it
  touches the shim's streams (a shim that gave up waiting has closed the connection: the provider
  then leaves without a word), joins the shim's process group (the engine signals the group) and
  runs `serve`. The provider then starts in a few tens of milliseconds instead of a new
  interpreter importing the SDK (about 0.4 s, on the path of every command), with the project's
  modules already loaded. The shim stays as the engine's plugin process: it forwards SIGINT and
  SIGTERM sent to it alone, leaves (closing the connection) when its engine is gone, and exits
  with the code the provider reports ({"exit": code}), or 1 when the provider is gone without
  one. The provider's lifeline is that connection: when the shim is gone, it exits once a stream
  write in flight has ended.
- **Here.** Without a zygote (no warm program: a cold run, another toolchain, an environment the
  zygote refuses), this process is the provider, as before: `serve` with the shim as its parent.

`serve` is the provider's start either way: on SIGINT (how the engine stops its plugins after
every command) it leaves at once, after any stream write in flight, instead of through the
interpreter's 0.1-0.2 s teardown; the modules Pulumi.yaml's runtime option providerPreload names
(PULUMI_RUNTIME_PROVIDERPRELOAD) are imported in the background as it starts; and when the
host's prestart Invoke is for an update (the program runs for `pulumi up`), the modules of
providerPreloadUpdate too (what creates and updates need, and the calls of a preview do not).

The shim runs without site (-S), and its way to the zygote imports only the interpreter's own C
modules (_socket, _json, _signal, _thread, _sha256 or _sha2): with the json, socket, signal and
hashlib packages (their enum and re imports) the shim took 68 ms to its request, against 29 ms
now and 13 ms for a bare `python -S`, on the path of every command before the provider serves.
"""

import os
import sys

#: How often the shim of a forked provider checks that its engine is there.
POLL_INTERVAL = 0.5
#: How long the shim waits for the zygote's answer (the warm program may still be importing)
#: before it starts the provider here.
ZYGOTE_REPLY_TIMEOUT = 10.0
#: Environment variables that may differ between the zygote (the language host's environment)
#: and the provider the engine starts: the engine and the host add their own, and a shell keeps
#: its own bookkeeping (bash as /bin/sh counts SHLVL and sets `_`; the working directory itself
#: is compared). Any other difference (PYTHONPATH, a virtualenv, NATS_*) makes the zygote refuse.
OWN_PREFIXES = ("PULUMI_", "EVENTBUS_")
SHELL_OWN = frozenset({"_", "SHLVL", "PWD", "OLDPWD"})


def zygote_path(engine, prefix, cwd):
    """The socket of the provider zygote for this engine, interpreter prefix (the virtualenv) and
    working directory: toolchain/langhost/program.py listens there, the shim connects there."""
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # Python 3.12 on
        except ImportError:  # an interpreter built without its own hashes
            from hashlib import sha256
    digest = sha256("\0".join((os.path.realpath(prefix), os.path.realpath(cwd))).encode()).hexdigest()[:16]
    return os.path.join(_tempdir(), f"eventbus-provider-{engine}-{digest}.sock")


def _tempdir():
    """tempfile.gettempdir()'s first choices, without its imports: $TMPDIR, $TEMP or $TMP when a
    directory, else /tmp."""
    for key in ("TMPDIR", "TEMP", "TMP"):
        folder = os.environ.get(key)
        if folder and os.path.isdir(folder):
            return folder
    return "/tmp"  # noqa: S108 - the socket is 0600 and its owner is checked before use


def json_text(value):
    """JSON of a str, int, list or dict of those, as json.dumps writes it compact (ASCII), without the json
    package: what the shim sends."""
    from _json import encode_basestring_ascii as text

    if isinstance(value, str):
        return text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(text(k) + ":" + json_text(v) for k, v in value.items()) + "}"
    raise TypeError(f"not sent as JSON: {type(value).__name__}")


def json_object(line):
    """A JSON object whose values are strings, integers, true, false or null (the zygote's and the
    provider's lines), without the json package. ValueError when it is not one."""
    from _json import scanstring

    text = line.decode("utf-8").strip() if isinstance(line, bytes) else line.strip()
    if text[:1] != "{":
        raise ValueError("not a JSON object")
    words = {"true": True, "false": False, "null": None}
    out, i = {}, 1
    while True:
        i = _skip(text, i)
        if text[i:i + 1] == "}" and not out:
            i += 1
            break
        if text[i:i + 1] != '"':
            raise ValueError(f"a key expected at {i}")
        key, i = scanstring(text, i + 1)
        i = _skip(text, i)
        if text[i:i + 1] != ":":
            raise ValueError(f"':' expected at {i}")
        i = _skip(text, i + 1)
        if text[i:i + 1] == '"':
            value, i = scanstring(text, i + 1)
        else:
            end = i
            while end < len(text) and text[end] not in ",} \t\r\n":
                end += 1
            word = text[i:end]
            if word in words:
                value = words[word]
            elif word.lstrip("-").isdigit():
                value = int(word)
            else:
                raise ValueError(f"an unsupported value at {i}: {word!r}")
            i = end
        out[key] = value
        i = _skip(text, i)
        if text[i:i + 1] == ",":
            i += 1
            continue
        if text[i:i + 1] == "}":
            i += 1
            break
        raise ValueError(f"',' or '}}' expected at {i}")
    if text[i:].strip():
        raise ValueError("text after the object")
    return out


def _skip(text, i):
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def environment_differs(ours, theirs, withheld=None):
    """The keys, outside OWN_PREFIXES and SHELL_OWN, whose values differ between two environments;
    with `withheld(name, value)`, also outside what it says the language host withholds."""
    keys = set(ours) | set(theirs)
    return sorted(k for k in keys
                  if not k.startswith(OWN_PREFIXES) and k not in SHELL_OWN and ours.get(k) != theirs.get(k)
                  and not (withheld and withheld(k, theirs.get(k) or ours.get(k) or "")))


def _parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _stop(*_):
    lifeline = sys.modules.get("components.pulumi.lifeline")
    if lifeline is not None:
        lifeline.exit_after_writes(0)
    os._exit(0)


def _preload(names):
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the provider reports it when it unpickles a resource
            pass


def _names(option):
    return os.environ.get("PULUMI_RUNTIME_" + option, "").replace(",", " ").split()


def _in_background(names):
    import threading

    if names:
        threading.Thread(target=_preload, args=(names,), daemon=True).start()


def serve(argv, shim_connection=None):
    """Be the dynamic provider, with `argv` as the SDK's module's arguments. With
    `shim_connection` (a forked provider), the shim's end of it closing is the engine gone."""
    import signal
    import threading

    signal.signal(signal.SIGINT, _stop)
    try:
        from components.pulumi import lifeline
    except Exception:  # noqa: BLE001 - not this project: no lifeline to start
        lifeline = None
    if lifeline is not None:
        lifeline.start_in_provider(shim_connection=shim_connection)
    elif shim_connection is not None:
        threading.Thread(target=_until_closed, args=(shim_connection, _stop), daemon=True).start()
    _in_background(_names("PROVIDERPRELOAD"))
    import runpy

    from pulumi.runtime.proto import provider_pb2_grpc as grpc_stubs

    register = grpc_stubs.add_ResourceProviderServicer_to_server

    def register_with_prestart(servicer, server):
        declined = servicer.Invoke

        def invoke(request, context):
            if request.tok == "pulumi-python:dynamic:prestart-update":
                _in_background(_names("PROVIDERPRELOADUPDATE"))
            return declined(request, context)

        servicer.Invoke = invoke
        return register(servicer, server)

    grpc_stubs.add_ResourceProviderServicer_to_server = register_with_prestart
    sys.argv = ["pulumi.dynamic", *argv]
    runpy.run_module("pulumi.dynamic", run_name="__main__", alter_sys=True)


def _until_closed(conn, then):
    try:
        while conn.recv(1 << 10):
            pass
    except OSError:
        pass
    then()


def hand_to_zygote(argv, script):
    """Have this engine's provider zygote fork the provider; this process then stays its
    stand-in and never returns. Returns why not when there is no zygote or it refuses."""
    import _socket
    import struct

    engine = _parent_of(os.getppid())  # the engine runs the shell shim, which runs this
    if engine is None:
        return "no engine"
    path = zygote_path(engine, _prefix(), os.getcwd())
    try:
        st = os.lstat(path)
    except OSError:
        return "no zygote"
    if st.st_uid != os.getuid():
        return "the zygote's socket is another user's"
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.connect(path)
        peer = struct.unpack("3i", conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))
        if peer[1] != os.getuid():
            conn.close()
            return "the zygote is another user's"
        body = json_text({"argv": list(argv), "environ": dict(os.environ), "cwd": os.getcwd(),
                          "script": script, "pgid": os.getpgid(0)}).encode()
        conn.sendmsg([struct.pack(">I", len(body)) + body],
                     [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
        conn.settimeout(ZYGOTE_REPLY_TIMEOUT)
        lines = _lines(conn)
        reply = json_object(next(lines, b"") or b"{}")
        if not reply.get("ok") or not isinstance(reply.get("pid"), int) or isinstance(reply.get("pid"), bool):
            conn.close()
            return str(reply.get("why", "the zygote declined"))
        conn.sendall(b"go\n")  # the provider touches none of this process's streams before it
    except (OSError, ValueError):
        conn.close()  # a provider forked for it leaves without a word: it waits for "go"
        return "the zygote did not answer"
    conn.settimeout(None)
    _stand_in(engine, reply["pid"], conn, lines)  # never returns


def _lines(conn):
    """The lines (b"...\\n", the last maybe without) that arrive on conn, until it closes."""
    buffer = b""
    while True:
        while b"\n" not in buffer:
            chunk = conn.recv(1 << 12)
            if not chunk:
                if buffer:
                    yield buffer
                return
            buffer += chunk
        line, _, buffer = buffer.partition(b"\n")
        yield line + b"\n"


def _prefix():
    """sys.prefix as site sets it (the virtualenv), in a shim started without site (-S), whose
    sys.prefix is still the base interpreter's: site.venv's rule, a pyvenv.cfg beside or above the
    interpreter's directory."""
    if not sys.flags.no_site:
        return sys.prefix
    folder = os.path.dirname(os.path.abspath(sys.executable))
    if any(os.path.isfile(os.path.join(f, "pyvenv.cfg")) for f in (folder, os.path.dirname(folder))):
        return os.path.dirname(folder)
    return sys.prefix


def _stand_in(engine, provider, conn, lines):
    """The shim of a forked provider: the engine's signals go to the provider, the engine's end
    ends the provider (the connection closes), and the provider's exit is this process's."""
    import _signal
    import _thread
    import time

    def forward(signum, _frame):
        try:
            os.kill(provider, signum)
        except OSError:
            pass

    for signum in (_signal.SIGINT, _signal.SIGTERM):
        _signal.signal(signum, forward)
    shim = os.getppid()

    def watch():
        while True:
            time.sleep(POLL_INTERVAL)
            if os.getppid() != shim or _parent_of(shim) != engine:
                os._exit(1)  # the connection closes with this process: the provider's lifeline

    _thread.start_new_thread(watch, ())
    code = 1
    try:
        for line in lines:
            message = json_object(line)
            if "exit" in message:
                code = int(message["exit"])
                break
    except (OSError, ValueError, TypeError):
        pass
    os._exit(code)


def main():
    """The shim's: `__file__` is this file, which the shim names (and execs). An engine's SIGINT
    before a provider serves ends this process quietly (and a provider forked for it, which then
    finds the connection closed)."""
    import _signal

    _signal.signal(_signal.SIGINT, _stop)
    if os.environ.get("EVENTBUS_PROVIDER_FORK", "1") != "0":
        hand_to_zygote(sys.argv[1:], __file__)
    if sys.flags.no_site:  # the shim starts without site (-S): only a provider served here needs it
        import site

        site.main()
    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
