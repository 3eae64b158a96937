"""A Pulumi language host for Python programs: the `pulumi-language-python` plugin.

Why this exists: the Go module proxy that this project may use refuses the
official host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
has no tags, and every commit and pseudo-version lookup returns 403), while
it serves the Pulumi CLI itself (pkg/v3). This adaptor fills the gap with
the least code that can: it speaks the LanguageRuntime gRPC protocol using
the stubs that ship inside the Pulumi Python SDK, and runs programs through
the SDK's own `pulumi-language-python-exec` script (from the sdk/v3 Go module,
the one the official host runs), so the engine, the SDK and the program runner
are all Pulumi's. Dependency installation is the project's set-up script's
job, so InstallDependencies reports nothing to do.

The engine starts the plugin with its own address as the first argument and
reads the gRPC port from the first line of standard output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

# The exec script's exit code for "the error has already been shown".
EXIT_BAIL = 32

#: How often the host and the program check that their parent is still alive, seconds.
POLL_INTERVAL = 0.5

#: Set to 1 (tests only), this host stands in for the official `pulumi-language-python`:
#: it does not watch its engine, and it runs the exec script as is, without the prelude.
AS_OFFICIAL_ENV = "EVENTBUS_HOST_AS_OFFICIAL"


def _as_official() -> bool:
    return os.environ.get(AS_OFFICIAL_ENV) == "1"

# The program runs the SDK's exec script through this prelude. An engine cancel (SIGINT)
# ends it quietly instead of with a KeyboardInterrupt traceback, and it exits when the
# language host that started it is gone (e.g. after the engine was SIGKILLed).
PRELUDE = f"""
import os, runpy, signal, sys, threading
signal.signal(signal.SIGINT, lambda *_: os._exit({EXIT_BAIL}))
_parent = os.getppid()
def _watch():
    while not threading.Event().wait({POLL_INTERVAL}):
        if os.getppid() != _parent:
            os._exit(1)
threading.Thread(target=_watch, daemon=True).start()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _version() -> str:
    from importlib.metadata import version

    return version("pulumi")


def _python_for(info: language_pb2.ProgramInfo) -> str:
    """The interpreter of the virtualenv named in Pulumi.yaml, else this one."""
    options = dict(info.options.items()) if info.HasField("options") else {}
    venv = options.get("virtualenv")
    if venv:
        path = Path(venv)
        if not path.is_absolute():
            path = Path(info.root_directory) / path
        python = path / "bin" / "python"
        if python.exists():
            return str(python)
    return sys.executable


class PythonLanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    def __init__(self, engine_address: str) -> None:
        self.engine_address = engine_address
        # Set by the wrapper that scripts/toolchain.sh installs next to it.
        self.exec_script = os.environ["PULUMI_LANGUAGE_PYTHON_EXEC"]
        self.children: set[subprocess.Popen[bytes]] = set()

    def Handshake(self, request, context):
        if request.engine_address:
            self.engine_address = request.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=_version())

    def GetRequiredPlugins(self, request, context):
        return language_pb2.GetRequiredPluginsResponse()

    def GetRequiredPackages(self, request, context):
        return language_pb2.GetRequiredPackagesResponse()

    def InstallDependencies(self, request, context):
        return iter(())

    def RuntimeOptionsPrompts(self, request, context):
        return language_pb2.RuntimeOptionsResponse()

    def About(self, request, context):
        python = _python_for(request.info)
        return language_pb2.AboutResponse(executable=python, version=sys.version.split()[0])

    def GetProgramDependencies(self, request, context):
        return language_pb2.GetProgramDependenciesResponse()

    def Cancel(self, request, context):
        for child in list(self.children):
            child.send_signal(signal.SIGINT)
        return empty_pb2.Empty()

    def stop_children(self) -> None:
        for child in list(self.children):
            child.kill()

    def Run(self, request, context):
        info = request.info
        prelude = [] if _as_official() else ["-c", PRELUDE]
        args = [_python_for(info), "-u", *prelude, self.exec_script]

        def opt(name: str, value: str) -> None:
            if value:
                args.extend([f"--{name}", value])

        opt("monitor", request.monitor_address)
        opt("engine", self.engine_address)
        opt("project", request.project)
        opt("stack", request.stack)
        opt("pwd", request.pwd)
        opt("dry_run", "true" if request.dryRun else "false")
        opt("parallel", str(request.parallel))
        opt("organization", request.organization)
        opt("root_directory", info.root_directory)
        program = request.program or info.entry_point or "."
        if info.program_directory and not os.path.isabs(program):
            program = os.path.join(info.program_directory, program)
        args.append(program)
        args.extend(request.args)

        env = dict(os.environ)
        env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
        env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
        child = subprocess.Popen(args, env=env, stdout=sys.stdout, stderr=sys.stderr)
        self.children.add(child)
        try:
            code = child.wait()
        finally:
            self.children.discard(child)
        if code == 0:
            return language_pb2.RunResponse()
        if code == EXIT_BAIL:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=f"Program exited with non-zero exit code: {code}")


def _watch_engine(engine: int, host: PythonLanguageHost) -> None:
    """Exit, taking the program with us, once the engine that started this host is gone.

    The wrapper script execs this interpreter, so the engine is the direct parent: a
    new parent means it died (SIGKILL leaves its plugins running otherwise).
    """
    while not threading.Event().wait(POLL_INTERVAL):
        if os.getppid() != engine:
            host.stop_children()
            os._exit(0)


def main(argv: list[str]) -> int:
    positional = [a for a in argv if not a.startswith("-")]
    engine_address = positional[0] if positional else ""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 400 * 1024 * 1024)],
    )
    host = PythonLanguageHost(engine_address)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(host, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    if not _as_official():
        threading.Thread(target=_watch_engine, args=(os.getppid(), host), name="engine-lifeline", daemon=True).start()
    # The engine stops plugins with SIGINT (then SIGKILL): shut down quietly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop(0))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
