"""components.lifeline in the program process, on real processes: a stand-in engine named
`pulumi` starts a host that starts a runner that starts the program, as an official language
host running the program through a package manager would; nothing in between watches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from components.pulumi import lifeline
from tests.harness import ROOT, VENV_BIN
from tests.traffic import wait_until

#: Each level starts the next and stays (for at most a minute); level 0 is the program, watching its chain.
TREE = """
import json, os, subprocess, sys, time
level = int(sys.argv[1])
if level == 0:
    from components.pulumi import lifeline
    chain = lifeline.engine_chain()
    print(json.dumps({"pid": os.getpid(), "chain": chain}), flush=True)
    lifeline.watch_chain(chain)
else:
    subprocess.run([os.path.realpath(sys.executable), __file__, str(level - 1)], check=False)
    time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_of_the_engine_two_levels_above_the_host_ends_the_program_while_the_rest_lingers(
        tmp_path: Path) -> None:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    engine_exe = tmp_path / "pulumi"  # the process name the chain looks for
    engine_exe.symlink_to(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    engine = subprocess.Popen([str(engine_exe), str(script), "3"], stdout=subprocess.PIPE, text=True, env=env)
    host = runner = None
    try:
        assert engine.stdout is not None
        seen = json.loads(engine.stdout.readline())
        runner, host, top = seen["chain"]
        assert top == engine.pid, seen
        assert lifeline.parent_of(host) == engine.pid and lifeline.parent_of(seen["pid"]) == runner
        engine.kill()
        engine.wait(10)
        assert wait_until(lambda: not alive(seen["pid"]), 10), "the program outlived its engine"
        assert alive(host) and alive(runner), "the host and runner linger: the program left on its own"
    finally:
        engine.kill()
        for pid in (host, runner):
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_start_in_program_outside_a_pulumi_run_starts_no_thread_and_leaves_sigint_alone() -> None:
    handler = signal.getsignal(signal.SIGINT)
    lifeline.start_in_program()
    assert signal.getsignal(signal.SIGINT) is handler
    assert "engine-lifeline" not in [t.name for t in threading.enumerate()]


#: Preloaded into the provider shim (PULUMI_RUNTIME_PROVIDERPRELOAD): it holds the stream write
#: lock, as a subject hand-over in flight does, until the test creates the file RELEASE names. The
#: lock is re-entrant, so the thread that takes it is the one that gives it back.
HOLD_WRITE_LOCK = """
import os, threading, time
from pathlib import Path
from components.migration.lock import STREAM_WRITE_LOCK
from components.pulumi import lifeline  # loaded in a provider that has served a stream

taken = threading.Event()

def hold():
    with STREAM_WRITE_LOCK:
        Path(os.environ["HELD"]).write_text("held")
        taken.set()
        deadline = time.monotonic() + 30
        while not Path(os.environ["RELEASE"]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)

threading.Thread(target=hold, daemon=True).start()  # daemon: only the shim's exit path waits for it
taken.wait(10)
"""

#: How soon a provider that waits for the write in flight leaves once it has ended: well within
#: lifeline.FINISH_TIMEOUT, after which it would leave anyway.
LEAVES_AFTER_THE_WRITE = lifeline.FINISH_TIMEOUT - 2


def test_provider_shim_preloads_its_modules_and_on_the_engines_sigint_exits_only_after_the_write_in_flight(
        tmp_path: Path) -> None:
    (tmp_path / "hold_write_lock.py").write_text(HOLD_WRITE_LOCK)
    held, release = tmp_path / "held", tmp_path / "release"
    env = {**os.environ, "PULUMI_RUNTIME_PROVIDERPRELOAD": "hold_write_lock", "HELD": str(held),
           "RELEASE": str(release), "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    env.pop("PULUMI_RUNTIME_VIRTUALENV", None)
    # As the engine starts it: the shim in its own process group, the engine's address as argument.
    shim = subprocess.Popen([str(VENV_BIN / "pulumi-resource-pulumi-python"), "127.0.0.1:1"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert shim.stdout is not None
        assert shim.stdout.readline().strip().isdigit(), "the provider did not print its port"
        assert wait_until(held.exists, 10), "the preloaded module was not imported as the provider started"
        provider = next(pid for pid in processes() if pid != shim.pid and pid_in_group(pid, shim.pid))
        os.killpg(shim.pid, signal.SIGINT)  # how the engine stops its plugins after every command
        assert not wait_until(lambda: not alive(provider), 0.5), "the provider left with a stream write in flight"
        release.touch()
        assert wait_until(lambda: not alive(provider), LEAVES_AFTER_THE_WRITE), \
            "the provider did not exit once the write ended"
    finally:
        release.touch()
        if shim.poll() is None:
            os.killpg(shim.pid, signal.SIGKILL)
        shim.wait(10)


def processes() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def pid_in_group(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group
    except OSError:
        return False


#: A stand-in engine: starts the provider shim as the engine does (its own process group, the
#: engine's address as argument), tells the shim's pid, and stays (for at most a minute).
ENGINE = """
import subprocess, sys, time
shim = subprocess.Popen([sys.argv[1], "127.0.0.1:1"], start_new_session=True)
print(shim.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("preload", ["", "components.pulumi.stream"])
def test_provider_shim_exits_when_its_engine_is_sigkilled_before_serving_a_resource(
        tmp_path: Path, preload: str) -> None:
    # No preload: nothing has imported the providers, whose import starts the lifeline of a
    # provider run as `python -m pulumi.dynamic`. The stream's preload: imported in the
    # background while runpy has yet to swap in the SDK's __main__.
    (tmp_path / "engine.py").write_text(ENGINE)
    engine_exe = tmp_path / "pulumi"
    engine_exe.symlink_to(sys.executable)
    env = {**os.environ, "PULUMI_RUNTIME_PROVIDERPRELOAD": preload, "PYTHONPATH": str(ROOT)}
    env.pop("PULUMI_RUNTIME_VIRTUALENV", None)
    engine = subprocess.Popen([str(engine_exe), str(tmp_path / "engine.py"),
                               str(VENV_BIN / "pulumi-resource-pulumi-python")],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    shim = None
    try:
        assert engine.stdout is not None
        lines = [engine.stdout.readline().strip() for _ in range(2)]  # the shim's pid, the provider's port
        assert all(line.isdigit() for line in lines), lines
        shim = next(int(line) for line in lines if lifeline.parent_of(int(line)) == engine.pid)
        provider = next(pid for pid in processes() if lifeline.parent_of(pid) == shim)
        engine.kill()
        engine.wait(10)
        assert wait_until(lambda: not alive(provider) and not alive(shim), 10), \
            "the provider outlived its SIGKILLed engine"
    finally:
        engine.kill()
        engine.wait(10)
        if shim is not None and alive(shim):
            os.killpg(shim, signal.SIGKILL)
