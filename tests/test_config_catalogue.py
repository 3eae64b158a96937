"""Every bad stack config fails `pulumi preview`, names the stack key (or the URL), and changes nothing.

The catalogue runs the real `pulumi preview` for each case against real nats-server
processes: one applied at phase 0 (its streams and consumers are compared before and
after every case), a plain server without JetStream, one requiring a password, one
with TLS, servers with file or memory storage disabled, one with tight account
limits, and the 3-node cluster. One Pulumi project serves every case: each case
rewrites its stack file. The pure logic underneath (key paths, did-you-mean, URL
rules, ordered diffs, the preflight's findings, connect-failure causes) is tested
first, without servers.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.jetstream.client import ConnectionSettings, JetStream, connect_failure
from components.jetstream.errors import ConfigError
from components.migration import preflight
from components.migration.topology import phase_topology
from components.spec.consumer import ConsumerSpec
from components.spec.stack import CREDENTIAL_KEYS, parse_stack_config, project_config, unknown_keys, url_problem
from components.spec.stream import Source, StreamSpec, changed_fields
from tests.harness import ROOT, NatsCluster, NatsServer, PulumiProject
from tests.test_topology_data import ORDERS, broken_orders

URL = "nats://127.0.0.1:4222"


# -- pure: keys, URLs, ordered diffs, preflight findings, connect causes -------------------
@pytest.mark.parametrize(("raw", "path", "suggestion"), [
    ({"replicaz": 3}, "replicaz", "did you mean replicas?"),
    ({"Replicas": 3}, "Replicas", "did you mean replicas?"),
    ({"natsURL": URL}, "natsURL", "did you mean natsUrl?"),
    ({"natsPasword": "x"}, "natsPasword", "did you mean natsPassword?"),
    ({"streams": {"core": {"maxAgee": "1h"}}}, "streams.core.maxAgee", "did you mean streams.core.maxAge?"),
    ({"streams": {"coore": {"maxAge": "1h"}}}, "streams.coore", "did you mean streams.core?"),
    ({"consumers": {"hrv": {"filtersubject": "a.>"}}}, "consumers.hrv.filtersubject",
     "did you mean consumers.hrv.filterSubject?"),
    ({"zzzz": 1}, "zzzz", "known keys here: allowDataLoss"),
])
def test_unknown_keys_typo_at_any_depth_gives_full_path_and_nearest_key(raw: dict, path: str, suggestion: str) -> None:
    problems = unknown_keys(raw)

    assert [p for p, _ in problems] == [path]
    assert suggestion in problems[0][1]


def test_unknown_keys_known_keys_at_every_depth_pass() -> None:
    raw = {"phase": 1, "natsUrl": URL, "replicas": 3, "streams": {"core": {"maxAge": "1h", "name": "X"}},
           "consumers": {"oura": {"ackWait": "1m", "max_deliver": 3}}, "rolloutHooks": {"2": "true"},
           **dict.fromkeys(CREDENTIAL_KEYS, "x")}

    assert unknown_keys(raw) == []


def test_unknown_keys_derive_from_the_model_so_new_fields_are_known() -> None:
    from components.spec.stack import StackConfig

    every_field = {f.alias or n: None for n, f in StackConfig.model_fields.items()}

    assert unknown_keys(every_field) == []


def test_parse_stack_config_unknown_key_fails_naming_the_full_key() -> None:
    with pytest.raises(ConfigError) as bad:
        parse_stack_config({"phase": 0, "natsUrl": URL, "streams": {"dlq": {"maxAgee": "1d"}}})

    assert bad.value.key == "aa-event-bus:streams.dlq.maxAgee"
    assert "did you mean streams.dlq.maxAge?" in str(bad.value)


@pytest.mark.parametrize(("url", "problem"), [
    ("not a url", "no scheme"), ("http://127.0.0.1:4222", "scheme 'http'"), ("nats://:4222", "names no host"),
    ("127.0.0.1:4222", "no scheme"), ("nats://h:99999", "not a URL"), ("", "empty URL"),
])
def test_url_problem_not_a_nats_url_says_why(url: str, problem: str) -> None:
    assert problem in (url_problem(url) or "")


@pytest.mark.parametrize("url", ["nats://127.0.0.1:4222", "tls://nats-0.nats:4222", "ws://h:8080", "wss://h", "nats://u:p@h"])
def test_url_problem_nats_urls_pass(url: str) -> None:
    assert url_problem(url) is None


def test_changed_fields_backoff_reordered_is_a_change() -> None:
    old = ConsumerSpec(stream="S", durable_name="d", filter_subjects=("a.>",), max_deliver=4, ack_wait="1s",
                       backoff=("1s", "5s", "2s"))
    new = old.model_copy(update={"backoff": ("1s", "2s", "5s")})

    assert changed_fields(old, new) == ["backoff"]
    assert changed_fields(old, old.model_copy()) == []


def test_changed_fields_sources_reordered_is_a_change() -> None:
    old = StreamSpec(name="S", sources=(Source(name="A"), Source(name="B")))
    new = old.model_copy(update={"sources": (Source(name="B"), Source(name="A"))})

    assert changed_fields(old, new) == ["sources"]


def test_changed_fields_nested_source_field_names_the_top_field() -> None:
    old = StreamSpec(name="S", sources=(Source(name="A", filter_subject="a.>"),))
    new = old.model_copy(update={"sources": (Source(name="A", filter_subject="a.b"),)})

    assert changed_fields(old, new) == ["sources"]


def _facts(**overrides: Any) -> preflight.ServerFacts:
    base: dict[str, Any] = {"url": URL, "version": (2, 15, 1), "api_level": 5, "cluster": None, "servers": 1,
                            "limits": {}, "streams_in_use": 0}
    return preflight.ServerFacts(**{**base, **overrides})


def _findings(stack_raw: dict, facts: preflight.ServerFacts, existing: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    stack = parse_stack_config({"phase": 0, "natsUrl": URL, **stack_raw})
    topo = phase_topology(stack)
    per_stream: dict[str, int] = {}
    for c in topo.consumers:
        per_stream[c.stream] = per_stream.get(c.stream, 0) + 1
    return preflight.findings(stack, topo.streams, per_stream, facts, existing)


@pytest.mark.parametrize(("stack_raw", "facts", "key", "text"), [
    ({"replicas": 3}, _facts(), "replicas", "single JetStream server"),
    ({"replicas": 5}, _facts(cluster="c", servers=3), "replicas", "advertises 3 servers"),
    ({}, _facts(limits={"max_streams": 1}), "phase", "max_streams"),
    ({}, _facts(limits={"max_consumers": 1}), "consumers", "2 durables on stream ATHLETE_ALLY_EVENTS"),
    ({"consumers": {"oura": {"maxAckPending": 5}}}, _facts(limits={"max_ack_pending": 10}),
     "consumers.hrv.maxAckPending", "max_ack_pending 10"),
    ({}, _facts(limits={"max_bytes_required": True}), "maxBytes", "max_bytes_required"),
    ({}, _facts(version=(2, 9, 25), api_level=0), "compression", "needs nats-server 2.10.0"),
])
def test_findings_server_would_refuse_names_the_stack_key(stack_raw: dict, facts: preflight.ServerFacts,
                                                          key: str, text: str) -> None:
    problems = _findings(stack_raw, facts)

    assert [k for k, _ in problems] == [key]
    assert text in problems[0][1]


@pytest.mark.parametrize(("stack_raw", "facts"), [
    ({"replicas": 3}, _facts(cluster="c", servers=3)),
    ({"replicas": 3}, _facts(cluster="c", servers=None)),  # a cluster that advertises nothing: not judged
    ({"compression": "none"}, _facts(version=(2, 9, 25), api_level=0)),
    ({"maxBytes": 1024}, _facts(limits={"max_bytes_required": True})),
])
def test_findings_server_that_accepts_finds_nothing(stack_raw: dict, facts: preflight.ServerFacts) -> None:
    assert _findings(stack_raw, facts) == []


def test_findings_max_streams_counts_only_streams_still_to_create() -> None:
    facts = _facts(limits={"max_streams": 2}, streams_in_use=2)

    assert _findings({}, facts, existing=("ATHLETE_ALLY_EVENTS", "AA_DLQ")) == []
    assert [k for k, _ in _findings({}, facts, existing=("AA_DLQ",))] == ["phase"]


def test_server_facts_from_info_counts_cluster_servers_from_connect_urls() -> None:
    single = preflight.ServerFacts.from_info(URL, {"version": "2.15.1"}, {"api": {"level": 5}})
    cluster = preflight.ServerFacts.from_info(URL, {"cluster": "c", "connect_urls": ["a:1", "b:1", "c:1"]}, {})

    assert (single.servers, single.version, single.api_level) == (1, (2, 15, 1), 5)
    assert (cluster.servers, cluster.cluster) == (3, "c")


@pytest.mark.parametrize(("env", "offline"), [({}, False), ({"EVENTBUS_OFFLINE_PREVIEW": "1"}, True),
                                              ({"EVENTBUS_OFFLINE_PREVIEW": "true"}, True),
                                              ({"EVENTBUS_OFFLINE_PREVIEW": "0"}, False)])
def test_offline_preview_requested_reads_the_env_var(env: dict, offline: bool) -> None:
    assert preflight.offline_preview_requested(env) is offline


@pytest.mark.parametrize(("exc", "cause"), [
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (socket.gaierror(-2, "Name or service not known"), "host not found"),
    (asyncio.TimeoutError(), "no answer within 1.5s"),
    (ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "TLS"),
    (Exception("nats: 'Authorization Violation'"), "authorization violation"),
])
def test_connect_failure_names_the_cause(exc: BaseException, cause: str) -> None:
    assert connect_failure(exc, 1.5).startswith(cause)


def test_pulumi_yaml_declares_every_stack_key_as_the_models_do() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]

    assert declared == project_config(), (
        "Pulumi.yaml's config: differs from components.config.project_config(); paste this:\n"
        + yaml.safe_dump({"config": project_config()}, sort_keys=False, width=120))
    assert all(d.get("type") and d.get("description") for d in declared.values())
    assert all("items" in d for d in declared.values() if d["type"] == "array")


# -- the catalogue: real `pulumi preview` against real servers ------------------------------
LIMITS_CONF = """
jetstream {}
accounts {
  STREAMS   { jetstream { max_streams: 1 },                users [{user: streams, password: pw}] }
  CONSUMERS { jetstream { max_consumers: 1 },              users [{user: consumers, password: pw}] }
  ACKS      { jetstream { max_ack_pending: 100 },          users [{user: acks, password: pw}] }
  BYTES     { jetstream { max_bytes_required: true },      users [{user: bytes, password: pw}] }
  NOFILE    { jetstream { max_file: 0, max_mem: 1G },      users [{user: nofile, password: pw}] }
  BIGSTREAM { jetstream { disk_max_stream_bytes: 1M },     users [{user: big, password: pw}] }
}
"""


@dataclass
class Servers:
    main: NatsServer
    plain: NatsServer
    auth: NatsServer
    nofile: NatsServer
    nomem: NatsServer
    limits: NatsServer
    cluster: NatsCluster
    tls: NatsServer | None
    extra: list[NatsServer] = field(default_factory=list)

    def url(self, name: str) -> str:
        if name == "dead":
            return "nats://127.0.0.1:1"
        return str(getattr(self, name).url)


def _tls_server(workdir: Path) -> NatsServer | None:
    """A server requiring TLS with a self-signed certificate, if openssl is at hand."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    cert, key = workdir / "tls-cert.pem", workdir / "tls-key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return NatsServer(workdir, name="tls", extra=["--tls", "--tlscert", str(cert), "--tlskey", str(key)]).start()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, nats_cluster: NatsCluster) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("catalogue-servers")
    started: list[NatsServer] = []

    def start(server: NatsServer) -> NatsServer:
        started.append(server)
        return server.start()

    def conf(name: str, text: str) -> list[str]:
        path = work / f"{name}.conf"
        path.write_text(text)
        return ["-c", str(path)]

    plain = NatsServer(work, name="plain")
    plain.args.remove("-js")  # a plain NATS server: no JetStream
    try:
        tls = _tls_server(work)
        if tls is not None:
            started.append(tls)
        found = Servers(
            main=start(NatsServer(work, name="main")),
            plain=start(plain),
            auth=start(NatsServer(work, name="auth", extra=["--user", "bus", "--pass", "right-password"])),
            nofile=start(NatsServer(work, name="nofile", extra=conf("nofile", "jetstream {max_file_store: 0}"))),
            nomem=start(NatsServer(work, name="nomem", extra=conf("nomem", "jetstream {max_memory_store: 0}"))),
            limits=start(NatsServer(work, name="limits", extra=conf("limits", LIMITS_CONF))),
            cluster=nats_cluster,
            tls=tls,
        )
        yield found
    finally:
        for server in started:
            server.stop()


BASE: dict[str, Any] = {"phase": 0, "replicas": 1}


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory, servers: Servers) -> PulumiProject:
    """One project, applied at phase 0 on the main server; each case rewrites its stack file."""
    project = PulumiProject(tmp_path_factory.mktemp("catalogue"), config={**BASE, "natsUrl": servers.main.url})
    project.up()
    return project


def snapshot(url: str, **creds: str) -> dict[str, Any]:
    """Every stream's and consumer's config on the server at `url`."""
    js = JetStream(ConnectionSettings(servers=url, **creds))
    return {info["config"]["name"]: (info["config"], sorted((c["name"], c["config"]) for c in js.consumer_infos(
        info["config"]["name"]))) for info in (js.stream_info(n) for n in js.stream_names()) if info}


#: Servers whose streams the test cannot list (nothing listens, no JetStream, TLS it does not trust).
UNREADABLE = frozenset({"dead", "plain", "tls"})


@dataclass(frozen=True)
class Case:
    id: str
    config: dict[str, Any]
    expect: tuple[str, ...]
    server: str = "main"
    #: credentials that read the target server's streams (for its snapshot); None: not readable
    admin: dict[str, str] | None = field(default_factory=dict)


def case(id_: str, expect: str | tuple[str, ...], server: str = "main", admin: dict[str, str] | None = None,
         **config: Any) -> Case:
    if admin is None and server not in UNREADABLE:
        admin = {}
    return Case(id_, config, (expect,) if isinstance(expect, str) else expect, server, admin)


#: The engine's own message for a value of the wrong type (Pulumi.yaml declares each key's type).
ENGINE = "configuration key '{}' must be of type"

CASES = [
    # typos, at every depth
    case("typo-top", ("aa-event-bus:replicaz", "did you mean replicas?"), replicaz=3),
    case("typo-case", ("aa-event-bus:Phase", "did you mean phase?"), Phase=1),
    case("typo-url-key", ("aa-event-bus:natsURL", "did you mean natsUrl?"), natsURL="nats://127.0.0.1:1"),
    case("typo-credential", ("aa-event-bus:natsPasword", "did you mean natsPassword?"), natsPasword="x"),
    case("typo-hooks", ("aa-event-bus:rolloutHook", "did you mean rolloutHooks?"), rolloutHook={"2": "true"}),
    case("typo-allow", ("aa-event-bus:allowDataLos", "did you mean allowDataLoss?"), allowDataLos=["AA_DLQ"]),
    case("typo-stream-field", ("aa-event-bus:streams.core.maxAgee", "did you mean streams.core.maxAge?"),
         streams={"core": {"maxAgee": "1h"}}),
    case("typo-stream-role", ("aa-event-bus:streams.coore", "did you mean streams.core?"),
         streams={"coore": {"maxAge": "1h"}}),
    case("typo-stream-name", ("aa-event-bus:streams.dlq.nmae", "did you mean streams.dlq.name?"),
         streams={"dlq": {"nmae": "DLQ"}}),
    case("typo-consumer-key", ("aa-event-bus:consumers.hrvv", "did you mean consumers.hrv?"),
         consumers={"hrvv": {"maxDeliver": 3}}),
    case("typo-consumer-field", ("aa-event-bus:consumers.hrv.filtersubject", "did you mean consumers.hrv.filterSubject?"),
         consumers={"hrv": {"filtersubject": "athlete-ally.hrv.>"}}),
    case("typo-consumer-ack", ("aa-event-bus:consumers.oura.ackwait", "did you mean consumers.oura.ackWait?"),
         consumers={"oura": {"ackwait": "30s"}}),
    # wrong values and types, every documented key
    case("phase-high", ("aa-event-bus:phase", "less than or equal to 3"), phase=7),
    case("phase-negative", ("aa-event-bus:phase", "greater than or equal to 0"), phase=-1),
    case("phase-text", ENGINE.format("phase"), phase="one"),
    case("url-text", ("aa-event-bus:natsUrl", "no scheme"), natsUrl="not a url"),
    case("url-http", ("aa-event-bus:natsUrl", "scheme 'http'"), natsUrl="http://127.0.0.1:4222"),
    case("url-no-host", ("aa-event-bus:natsUrl", "names no host"), natsUrl="nats://:4222"),
    case("url-empty-entry", ("aa-event-bus:natsUrl", "empty URL"), natsUrl="nats://127.0.0.1:4222,"),
    case("replicas-zero", ("aa-event-bus:replicas", "greater than or equal to 1"), replicas=0),
    case("replicas-six", ("aa-event-bus:replicas", "less than or equal to 5"), replicas=6),
    case("replicas-text", ENGINE.format("replicas"), replicas="three"),
    case("storage", ("aa-event-bus:storage", "'file' or 'memory'"), storage="disk"),
    case("compression", ("aa-event-bus:compression", "'s2' or 'none'"), compression="lz4"),
    case("discard", ("aa-event-bus:discard", "'old' or 'new'"), discard="newest"),
    case("duplicate-window", ("aa-event-bus:duplicateWindow", "invalid duration"), duplicateWindow="2 minutes"),
    case("duplicate-window-long", ("aa-event-bus:duplicateWindow", "streams.legacy.maxAge 24h"), duplicateWindow="48h"),
    case("max-bytes-zero", ("aa-event-bus:maxBytes", "-1 for no limit"), maxBytes=0),
    case("max-bytes-text", ENGINE.format("maxBytes"), maxBytes="1G"),
    case("streams-type", ENGINE.format("streams"), streams=5),
    case("stream-max-age", ("aa-event-bus:streams.core.maxAge", "invalid duration"), streams={"core": {"maxAge": "forever"}}),
    case("stream-name", ("aa-event-bus:streams.vendor.name",), streams={"vendor": {"name": "AA VENDOR"}}),
    case("stream-name-twice", ("aa-event-bus:streams", "own name"), streams={"dlq": {"name": "AA_CORE_HOT"}}),
    case("consumers-type", ENGINE.format("consumers"), consumers=["hrv"]),
    case("filter-malformed", ("aa-event-bus:consumers.hrv.filterSubject", "empty token"),
         consumers={"hrv": {"filterSubject": "athlete-ally..hrv"}}),
    case("filter-outside-stream", ("aa-event-bus:consumers.hrv.filterSubject", "matches no subject of stream"),
         consumers={"hrv": {"filterSubject": "vendor.hrv.>"}}),
    case("max-deliver", ("aa-event-bus:consumers.oura.maxDeliver", "greater than or equal to 1"),
         consumers={"oura": {"maxDeliver": 0}}),
    case("ack-wait", ("aa-event-bus:consumers.oura.ackWait", "longer than 0"), consumers={"oura": {"ackWait": "0"}}),
    case("max-ack-pending", ("aa-event-bus:consumers.hrv.maxAckPending",), consumers={"hrv": {"maxAckPending": 0}}),
    case("durable-name", ("aa-event-bus:consumers.hrv.durable",), consumers={"hrv": {"durable": "normalize hrv"}}),
    case("allow-data-loss-type", ENGINE.format("allowDataLoss"), allowDataLoss="AA_DLQ"),
    case("drain-timeout", ("aa-event-bus:drainTimeout", "invalid duration"), drainTimeout="soon"),
    case("claim-retry-timeout", ("aa-event-bus:claimRetryTimeout", "invalid duration"), claimRetryTimeout="a while"),
    case("claim-retry-zero", ("aa-event-bus:claimRetryTimeout", "longer than 0"), claimRetryTimeout="0"),
    case("verify-type", ENGINE.format("verify"), verify="maybe"),
    case("hooks-phase", ("aa-event-bus:rolloutHooks", "phases 0 to 3"), rolloutHooks={"7": "true"}),
    case("hooks-type", ENGINE.format("rolloutHooks"), rolloutHooks="kubectl rollout restart"),
    case("topology-subject-two-owners", ("aa-event-bus:topology.streams.ORDERS_EU.phases.1", "one owner per phase"),
         topology=broken_orders("streams.ORDERS.phases.1", ["orders.>"])),
    case("topology-filter-outside-home", ("aa-event-bus:topology.durables.fulfil-eu.filterSubject",
                                          "matches no subject of stream ORDERS"),
         topology=broken_orders("durables.fulfil-eu.homes.1", "ORDERS")),
    case("topology-phase-beyond", ("aa-event-bus:phase", "less than or equal to 2"), phase=3, topology=ORDERS),
    case("typo-probe-field", ("aa-event-bus:probe.prefx", "did you mean probe.prefix?"), probe={"prefx": "_p"}),
    case("probe-prefix", ("aa-event-bus:probe.prefix", "one subject token"), probe={"prefix": "a.b"}),
    case("probe-threshold", ("aa-event-bus:probe.maxPending", "greater than or equal to 0"), probe={"maxPending": -1}),
    case("tls-ca", ("cannot connect to NATS", "TLS", "natsTlsCa"), natsTlsCa="not a certificate"),
    # values only the live server can refute
    case("replicas-single-server", ("aa-event-bus:replicas", "single JetStream server"), replicas=3),
    case("replicas-above-cluster", ("aa-event-bus:replicas", "advertises 3 servers"), server="cluster", replicas=5),
    case("file-storage-off", ("aa-event-bus:storage", "file storage is not available"), server="nofile"),
    case("memory-storage-off", ("aa-event-bus:storage", "memory storage is not available"), server="nomem",
         storage="memory"),
    case("account-max-streams", ("aa-event-bus:phase", "max_streams"), server="limits",
         admin={"user": "streams", "password": "pw"}, natsUser="streams", natsPassword="pw"),
    case("account-max-consumers", ("aa-event-bus:consumers", "max_consumers"), server="limits",
         admin={"user": "consumers", "password": "pw"}, natsUser="consumers", natsPassword="pw"),
    case("account-max-ack-pending", ("aa-event-bus:consumers.hrv.maxAckPending", "max_ack_pending 100"),
         server="limits", admin={"user": "acks", "password": "pw"}, natsUser="acks", natsPassword="pw"),
    case("account-max-bytes-required", ("aa-event-bus:maxBytes", "max_bytes_required"), server="limits",
         admin={"user": "bytes", "password": "pw"}, natsUser="bytes", natsPassword="pw"),
    case("account-no-file-storage", ("aa-event-bus:storage", "file storage is not available"), server="limits",
         admin={"user": "nofile", "password": "pw"}, natsUser="nofile", natsPassword="pw"),
    case("account-stream-bytes", ("aa-event-bus:maxBytes", "per-stream limit"), server="limits",
         admin={"user": "big", "password": "pw"}, natsUser="big", natsPassword="pw", maxBytes=10 * 1024 * 1024),
    # unreachable and refusing servers
    case("connection-refused", ("nats://127.0.0.1:1", "connection refused"), server="dead"),
    case("no-jetstream", ("no JetStream responded", "-js"), server="plain"),
    case("wrong-password", ("authorization violation",), server="auth",
         admin={"user": "bus", "password": "right-password"}, natsUser="bus", natsPassword="wrong"),
    case("no-credentials", ("authorization violation",), server="auth",
         admin={"user": "bus", "password": "right-password"}),
    case("tls-untrusted", ("TLS", "natsTlsCa"), server="tls"),
]


def test_catalogue_has_forty_cases_and_covers_every_documented_key() -> None:
    named = {e.removeprefix("aa-event-bus:").split(".")[0] for c in CASES for e in c.expect
             if e.startswith("aa-event-bus:")}
    written = {k for c in CASES for k in c.config} | named
    assert len(CASES) >= 40
    documented = set(project_config()) - set(CREDENTIAL_KEYS) | {"natsUser", "natsPassword", "natsTlsCa"}
    assert documented <= written, f"no case for {sorted(documented - written)}"


@pytest.mark.pulumi
@pytest.mark.cluster
@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_preview_bad_config_fails_naming_the_key_and_changes_nothing(applied: PulumiProject, servers: Servers,
                                                                      bad: Case) -> None:
    if bad.server == "tls" and servers.tls is None:
        pytest.skip("openssl is not installed: no TLS server")
    url = servers.url(bad.server)
    config = {**BASE, "natsUrl": url, **bad.config}
    applied.stack_file.write_text(yaml.safe_dump({"config": {f"aa-event-bus:{k}": v for k, v in config.items()}}))
    before_main = snapshot(servers.main.url)
    before = snapshot(url, **bad.admin) if bad.admin is not None and bad.server != "main" else None

    done = applied.preview(check=False)

    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    for text in bad.expect:
        assert text in output, f"{text!r} not in the preview output:\n{output[-3000:]}"
    assert "Traceback" not in output
    assert snapshot(servers.main.url) == before_main
    if before is not None:
        assert snapshot(url, **(bad.admin or {})) == before


# -- the opt-out, and the CLI on refusing servers -------------------------------------------
@pytest.mark.pulumi
@pytest.mark.cluster
def test_preview_no_server_with_offline_opt_out_passes_and_says_nothing_was_checked(
        applied: PulumiProject, servers: Servers) -> None:
    from components.cli.preview_report import render

    config = {**BASE, "natsUrl": servers.url("dead")}
    applied.stack_file.write_text(yaml.safe_dump({"config": {f"aa-event-bus:{k}": v for k, v in config.items()}}))
    applied.env[preflight.OFFLINE_ENV] = "1"
    try:
        done = applied.preview(check=False)
        report = render(applied.preview_json(), "test")
    finally:
        del applied.env[preflight.OFFLINE_ENV]

    assert done.returncode == 0, done.stdout[-3000:]
    assert preflight.OFFLINE_NOTE in done.stdout
    assert "Offline preview: nothing was checked against the server." in report.markdown


@pytest.mark.pulumi
@pytest.mark.cluster
def test_up_no_server_with_offline_opt_out_still_fails_naming_the_url(applied: PulumiProject, servers: Servers) -> None:
    config = {**BASE, "natsUrl": servers.url("dead")}
    applied.stack_file.write_text(yaml.safe_dump({"config": {f"aa-event-bus:{k}": v for k, v in config.items()}}))
    applied.env[preflight.OFFLINE_ENV] = "1"
    try:
        done = applied.up(check=False)
    finally:
        del applied.env[preflight.OFFLINE_ENV]

    assert done.returncode != 0
    assert "cannot read the live server" in done.stdout and "nats://127.0.0.1:1" in done.stdout


@pytest.mark.cluster
@pytest.mark.parametrize(("server", "env", "cause"), [
    ("dead", {}, "connection refused"),
    ("plain", {}, "no JetStream responded"),
    ("auth", {"NATS_USER": "bus", "NATS_PASSWORD": "wrong"}, "authorization violation"),
    ("auth", {}, "authorization violation"),
])
def test_cli_refusing_server_exits_2_naming_url_and_cause(servers: Servers, server: str, env: dict[str, str],
                                                          cause: str) -> None:
    from click.testing import CliRunner

    from components.cli.main import main

    url = servers.url(server)
    result = CliRunner().invoke(main, ["--url", url, "stream", "info"],
                                env={"NATS_USER": None, "NATS_PASSWORD": None, **env})

    assert result.exit_code == 2
    assert url in result.stderr and cause in result.stderr
