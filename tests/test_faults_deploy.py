"""Faults during `pulumi up`, with traffic: the real Pulumi CLI, a real nats-server, a retrying
publisher and workers bound through components.binding.

The deploy reaches the server through tests/proxy.py, so each fault hits an exact
request: the claim that follows the release of a moving subject. Traffic goes
straight to the server. Each test walks the moves 0→1, 1→2, 2→1 and 1→0 (or the
two a fault needs) on one stack, so set-up is paid once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.jetstream.client import ConnectionSettings, JetStream
from components.migration.verify import passed, verify_phase
from components.spec.stack import parse_stack_config
from tests.harness import NatsServer, PulumiProject, marked_processes
from tests.proxy import CUT_BEFORE, FORWARD, ApiProxy
from tests.traffic import Publisher, wait_until

pytestmark = pytest.mark.pulumi

LEGACY, CORE, VENDOR = "ATHLETE_ALLY_EVENTS", "AA_CORE_HOT", "AA_VENDOR_HOT"
HRV, OURA = "normalize-hrv-durable", "normalize-oura"
SUBJECTS = ("athlete-ally.hrv.raw-received", "vendor.oura.sleep")
UPDATE = "$JS.API.STREAM.UPDATE."
#: (from, to, the stream releasing, the stream claiming, the moving subject)
MOVES = [(0, 1, LEGACY, VENDOR, "vendor.>"), (1, 2, LEGACY, CORE, "athlete-ally.>"),
         (2, 1, CORE, LEGACY, "athlete-ally.>"), (1, 0, VENDOR, LEGACY, "vendor.>")]
#: At most this many deliveries beyond the first, per fault (in-flight messages at ack time).
MAX_REDELIVERED = 200


class Counting:
    """A binding.Worker handler counting every delivery of every id."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self.lock:
            self.deliveries[msg.data.decode()] += 1

    def ids(self) -> set[str]:
        with self.lock:
            return set(self.deliveries)

    def redelivered(self) -> int:
        with self.lock:
            return sum(n - 1 for n in self.deliveries.values())


class OnClaim:
    """Proxy hook: once armed, acts on the first update of `gaining` after `losing`'s update
    (the claim), or with `losing` None on the first request to exactly `gaining`."""

    def __init__(self) -> None:
        self.armed: tuple[str | None, str, Any, str] | None = None
        self.released = False
        self.fired = threading.Event()

    def arm(self, losing: str | None, gaining: str, action: Any, answer: str = CUT_BEFORE) -> None:
        self.released = losing is None
        self.fired.clear()
        self.armed = (losing, gaining, action, answer)

    def __call__(self, subject: str) -> str:
        if self.armed is None:
            return FORWARD
        losing, gaining, action, answer = self.armed
        target = gaining if losing is None else UPDATE + gaining
        if losing is not None and subject == UPDATE + losing:
            self.released = True
        elif subject == target and self.released:
            self.armed = None
            action()
            self.fired.set()
            return answer
        return FORWARD


class Deploy:
    """A stack whose deploy goes through the proxy, with traffic running on the server."""

    def __init__(self, tmp_path: Path, server: NatsServer) -> None:
        self.server = server
        self.hook = OnClaim()
        self.proxy = ApiProxy(server.port, self.hook).start()
        self.marker = uuid.uuid4().hex
        self.project = PulumiProject(tmp_path, config={
            "phase": 0, "natsUrl": self.proxy.url, "replicas": 1,
            "allowDataLoss": [VENDOR, CORE], "drainTimeout": "5s", "claimRetryTimeout": "20s"})
        self.project.env["EVENTBUS_TEST_MARKER"] = self.marker
        self.js = JetStream(ConnectionSettings(servers=server.url))
        self.seen = Counting()
        self.workers: list[Any] = []
        self.publisher: Publisher | None = None

    def start_traffic(self) -> None:
        from components.binding import Worker

        settings = ConnectionSettings(servers=self.server.url)
        self.workers = [Worker(settings, HRV, [CORE, LEGACY], self.seen, fetch_timeout=0.5),
                        Worker(settings, OURA, [VENDOR, LEGACY], self.seen, fetch_timeout=0.5)]
        for worker in self.workers:
            worker.start()
        self.publisher = Publisher(self.server.url, SUBJECTS, interval=0.005).start()

    def stop_traffic(self) -> tuple[set[str], int]:
        """(acknowledged ids never processed, redeliveries) once the workers caught up."""
        assert self.publisher is not None
        self.publisher.stop()
        acked = set(self.publisher.acked)
        for _ in range(3):
            if wait_until(lambda: acked <= self.seen.ids(), 30):
                break
            self.project.up()  # a drained durable left behind goes, a stranded one appears
        for worker in self.workers:
            worker.stop()
        return acked - self.seen.ids(), self.seen.redelivered()

    def processes(self) -> list[int]:
        """Pids of every process of this stack's deploys (they carry the marker in their environment)."""
        return marked_processes(self.marker)

    def up_in_background(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", self.project.stack,
             "--cwd", str(self.project.dir), *extra],
            env=self.project.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def check(self, phase: int) -> None:
        stack = parse_stack_config({"phase": phase, "natsUrl": "nats://x"})
        findings = verify_phase(self.js, stack, phase)
        assert passed(findings), [f for f in findings if f.status == "fail"]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.publisher:
            self.publisher.stop()
        for pid in self.processes():
            os.kill(pid, signal.SIGKILL)
        self.proxy.stop()


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Deploy]:
    server = NatsServer(tmp_path, name="deploy").start()
    made = Deploy(tmp_path, server)
    try:
        made.project.up()
        yield made
    finally:
        made.close()
        server.stop()


def describe(pids: list[int]) -> list[str]:
    """Each pid's parent, state and command line, for a failure message."""
    told = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")[:160]
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                state, ppid = fh.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        told.append(f"{pid} (parent {ppid}, state {state}): {cmdline}")
    return told


def unowned(js: JetStream, subjects: tuple[str, ...]) -> list[str]:
    return [s for s in subjects if not js.stream_names(s)]


def test_config_the_server_refuses_at_phase_1_fails_up_before_any_release_and_again_on_rerun(
        deploy: Deploy) -> None:
    # The preflight asks the server before anything is registered; the provider's own
    # pre-apply and give-back (for refusals no preflight foresees) are in test_faults.py.
    deploy.start_traffic()
    deploy.project.set("phase", 1)
    deploy.project.set("replicas", 3)  # a single server refuses replicas 3 (10074)
    for _ in range(2):
        done = deploy.project.up(check=False)
        assert done.returncode != 0
        assert "aa-event-bus:replicas" in done.stdout and "single JetStream server" in done.stdout
        assert deploy.js.stream_names("vendor.>") == [LEGACY]
    assert deploy.proxy.requests(UPDATE + LEGACY) == []  # nothing was ever released
    deploy.project.set("replicas", 1)
    deploy.project.up()
    deploy.check(1)
    lost, redelivered = deploy.stop_traffic()
    assert lost == set()
    assert redelivered <= MAX_REDELIVERED


def test_server_restart_between_release_and_claim_ends_every_move_with_the_subject_owned(deploy: Deploy) -> None:
    deploy.start_traffic()
    for old, new, losing, gaining, subject in MOVES:
        deploy.hook.arm(losing, gaining, lambda: (deploy.server.stop(), deploy.server.start()))
        deploy.project.set("phase", new)
        deploy.project.up()
        assert deploy.hook.fired.is_set(), f"{old}->{new}: the restart was not injected"
        assert deploy.js.stream_names(subject) == [gaining], f"{old}->{new}"
        deploy.check(new)
    lost, redelivered = deploy.stop_traffic()
    assert lost == set()
    assert redelivered <= MAX_REDELIVERED


#: The durable each move creates on the stream that gained its subjects.
DURABLE_ON_GAINING = {(0, 1): OURA, (1, 2): HRV, (2, 1): HRV, (1, 0): OURA}


def test_sigkill_of_pulumi_after_the_claim_ends_its_plugins_and_up_replays_no_history(deploy: Deploy) -> None:
    deploy.start_traffic()
    running: dict[str, subprocess.Popen[str]] = {}
    for old, new, _losing, gaining, _subject in MOVES:
        # Killed after the claim, before the durable exists on the gaining stream.
        create = f"$JS.API.CONSUMER.CREATE.{gaining}.{DURABLE_ON_GAINING[(old, new)]}"
        deploy.hook.arm(None, create, lambda: os.kill(running["up"].pid, signal.SIGKILL))
        deploy.project.set("phase", new)
        running["up"] = deploy.up_in_background()
        assert deploy.hook.fired.wait(120), f"{old}->{new}: no durable create seen"
        running["up"].wait(30)
        killed_at = time.monotonic()
        assert wait_until(lambda: not deploy.processes(), 10), \
            f"{old}->{new}: plugins alive {time.monotonic() - killed_at:.1f}s after the kill: {describe(deploy.processes())}"
        deploy.project.run("cancel", "--yes", "--stack", deploy.project.stack, check=False)
        deploy.project.up()
        deploy.check(new)
    lost, redelivered = deploy.stop_traffic()
    assert lost == set()
    assert redelivered <= MAX_REDELIVERED  # the durables created after each kill replayed no history


def test_crash_between_release_and_claim_is_named_by_preview_and_repaired_by_cancel_then_up(deploy: Deploy) -> None:
    deploy.start_traffic()
    for old, new, losing, gaining, subject in MOVES:
        # The whole deploy dies at once (a lost machine): nothing finishes the claim.
        deploy.hook.arm(losing, gaining, lambda: [os.kill(p, signal.SIGKILL) for p in deploy.processes()])
        deploy.project.set("phase", new)
        up = deploy.up_in_background()
        assert deploy.hook.fired.wait(120), f"{old}->{new}: no claim seen"
        up.wait(30)
        assert unowned(deploy.js, (subject,)) == [subject]
        deploy.project.run("cancel", "--yes", "--stack", deploy.project.stack, check=False)
        preview = deploy.project.preview(check=False)
        assert f"subject {subject} has no stream (actual owner: none, expected owner: {gaining})" in preview.stdout
        deploy.project.up()
        deploy.check(new)
    lost, redelivered = deploy.stop_traffic()
    assert lost == set()
    assert redelivered <= MAX_REDELIVERED


def cancel_at_the_claim(deploy: Deploy) -> str:
    """`pulumi up` to phase 1, SIGINT (an engine cancel) at the claim; the deploy's output."""
    running: dict[str, subprocess.Popen[str]] = {}
    deploy.hook.arm(LEGACY, VENDOR, lambda: os.kill(running["up"].pid, signal.SIGINT), FORWARD)
    deploy.project.set("phase", 1)
    running["up"] = deploy.up_in_background()
    assert deploy.hook.fired.wait(120), "no claim seen"
    out, _ = running["up"].communicate(timeout=120)
    return out


def test_engine_cancel_mid_hand_over_ends_without_a_traceback_and_up_converges(deploy: Deploy) -> None:
    out = cancel_at_the_claim(deploy)
    assert "cancel" in out.lower()
    assert "KeyboardInterrupt" not in out and "Traceback" not in out, out[-3000:]
    assert wait_until(lambda: not deploy.processes(), 10), deploy.processes()
    deploy.project.run("cancel", "--yes", "--stack", deploy.project.stack, check=False)
    deploy.project.up()
    deploy.check(1)


def roles(pids: list[int]) -> dict[str, list[int]]:
    """The deploy's processes by role: the language host, the program, the dynamic provider (the
    SDK's module, the toolchain's shim, or one forked by the provider zygote), the zygote."""
    found: dict[str, list[int]] = {"host": [], "program": [], "provider": [], "zygote": [], "other": []}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        argv0 = cmdline.split(" ", 1)[0]
        role = ("zygote" if comm == "provider-zygote"
                else "provider" if comm == "provider-forked" or "pulumi.dynamic" in cmdline
                or "toolchain/provider.py" in cmdline
                else "program" if "pulumi-language-python-exec" in cmdline
                else "host" if argv0.endswith("pulumi-language-python") else "other")
        found[role].append(pid)
    return found


def as_official_host(deploy: Deploy) -> None:
    """From the next run on, the language host behaves as the official one: no engine watch, no prelude."""
    deploy.project.env["EVENTBUS_HOST_AS_OFFICIAL"] = "1"


def test_sigkill_of_pulumi_with_a_host_that_lingers_ends_the_program_and_provider_within_10s(
        deploy: Deploy) -> None:
    as_official_host(deploy)
    running: dict[str, subprocess.Popen[str]] = {}
    before: dict[str, list[int]] = {}

    def kill() -> None:
        before.update(roles(deploy.processes()))
        os.kill(running["up"].pid, signal.SIGKILL)

    deploy.hook.arm(LEGACY, VENDOR, kill, FORWARD)
    deploy.project.set("phase", 1)
    running["up"] = deploy.up_in_background()
    assert deploy.hook.fired.wait(120), "no claim seen"
    running["up"].wait(30)
    assert before["program"] and before["host"] and before["provider"], before

    def plugins_left() -> list[int]:
        return [pid for role, pids in roles(deploy.processes()).items() if role != "host" for pid in pids]

    assert wait_until(lambda: not plugins_left(), 10), roles(deploy.processes())
    # The host was still there: the program left on its own, not through the host's watch.
    assert roles(deploy.processes())["host"] == before["host"]


def test_engine_cancel_with_the_prelude_bypassed_ends_the_program_without_a_traceback(deploy: Deploy) -> None:
    as_official_host(deploy)
    out = cancel_at_the_claim(deploy)
    assert "cancel" in out.lower()
    assert "KeyboardInterrupt" not in out and "Traceback" not in out, out[-3000:]
    assert wait_until(lambda: not deploy.processes(), 10), roles(deploy.processes())


def move_by_hand(js: JetStream, subject: str, source: str, target: str) -> None:
    """An operator's raw edit (as `nats stream edit` does it: whole config, metadata kept)."""
    from components.spec.stream import StreamSpec

    config = js.stream_info(source)["config"]
    spec = StreamSpec.from_wire(config).model_copy(update={"subjects": ()})
    js.request(f"$JS.API.STREAM.UPDATE.{source}", {**spec.wire(), "metadata": config.get("metadata") or {}})
    config = js.stream_info(target)["config"]
    js.request(f"$JS.API.STREAM.UPDATE.{target}", {**config, "subjects": [*config["subjects"], subject]})


def test_out_of_band_move_back_is_warned_and_up_drains_the_stranded_messages_then_removes_the_durable(
        deploy: Deploy) -> None:
    deploy.project.set("phase", 1)
    deploy.project.up()
    deploy.start_traffic()
    move_by_hand(deploy.js, "vendor.>", VENDOR, LEGACY)
    assert wait_until(lambda: deploy.js.request(f"$JS.API.STREAM.INFO.{LEGACY}", {"subjects_filter": "vendor.>"})
                      ["state"].get("subjects"), 10)

    preview = deploy.project.preview()
    assert f"subject vendor.> is owned by {LEGACY} (expected owner: {VENDOR})" in preview.stdout
    assert re.search(rf"\d+ messages under vendor\.oura\.> are stored in {LEGACY} from seq \d+ on", preview.stdout)
    deploy.project.up()
    assert deploy.js.stream_names("vendor.>") == [VENDOR]
    drain = deploy.js.consumer_info(LEGACY, OURA)
    assert drain is not None and drain["config"]["deliver_policy"] == "by_start_sequence"

    lost, redelivered = deploy.stop_traffic()
    assert lost == set()
    assert redelivered <= MAX_REDELIVERED
    deploy.project.up()  # drained now: the durable goes, and nothing is stranded any more
    assert deploy.js.consumer_info(LEGACY, OURA) is None
    assert "with no durable" not in deploy.project.preview().stdout
