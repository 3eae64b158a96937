"""What only the live server can refute, asked at `pulumi preview`, each answer naming a stack key.

The program runs these checks after it has read the managed streams, before any
resource is registered, so a config the server would refuse at apply fails the
preview instead:

* `replicas` above the JetStream servers the deploy can see: a server that is not
  clustered takes 1; a cluster counts the servers it advertises (`connect_urls`
  of the server's INFO, which every account sees);
* `storage` disabled on the server or the account, `maxBytes` required by the
  account, and other limits the server checks when a stream is created: asked
  with a *refused create* per stream (its real config, no subjects, mirroring a
  stream through an invalid filter). nats-server checks replicas, storage and the
  account's limits before it validates that filter, and refuses the filter before
  it creates anything, so the answer is the server's own verdict on the config
  and nothing is created;
* the account's stream, per-stream consumer and ack-pending limits, from
  `$JS.API.INFO`;
* a server version or JetStream API level below what a configured feature needs
  (`REQUIREMENTS`).

`findings()` is pure (facts in, problems out); `check_server()` reads the facts
and raises. `offline_preview_requested()` is the documented opt-out for a preview
meant to run without a server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.jetstream.client import ConnectionSettings, JetStream, connect_quickly
from components.jetstream.errors import ConfigError, JetStreamAPIError
from components.spec.stack import PROJECT, StackConfig
from components.spec.stream import StreamSpec

#: Set to 1 (or true/yes) for a `pulumi preview` meant to run without a server: the preview
#: then passes with a warning that nothing was checked against the server. `pulumi up` ignores it.
OFFLINE_ENV = "EVENTBUS_OFFLINE_PREVIEW"

#: The warning an offline preview prints (the preview report looks for it).
OFFLINE_NOTE = "offline preview: nothing was checked against the server"

#: The err_code of the probe's deliberate fault (an invalid mirror filter): nothing else refused.
PROBE_FAULT = 10049

#: Server refusals of the probe, by err_code: the stack key that decides it and what to do.
REFUSALS: dict[int, tuple[str, str]] = {
    10074: ("replicas", "the server is not clustered: use replicas 1, or point natsUrl at a cluster"),
    10005: ("replicas", "not enough JetStream servers for this many replicas: lower replicas or grow the cluster"),
    10023: ("replicas", "the cluster lacks the resources for these replicas: lower replicas or add servers"),
    10047: ("storage", "file storage is not available to this account on the server: use storage memory, or "
                       "give the account (or server) file storage"),
    10028: ("storage", "memory storage is not available to this account on the server: use storage file, or "
                       "give the account (or server) memory storage"),
    10113: ("maxBytes", "the account requires every stream to set a size limit: set maxBytes"),
    10122: ("maxBytes", "maxBytes is above the account's per-stream limit: lower maxBytes"),
    10027: ("phase", "the account has no room for another stream: raise its max_streams, or remove streams"),
}


def offline_preview_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the operator asked for a preview without a server (OFFLINE_ENV)."""
    return environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def _version(text: str) -> tuple[int, int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
    return (numbers + [0, 0, 0])[0], (numbers + [0, 0, 0])[1], (numbers + [0, 0, 0])[2]


@dataclass(frozen=True)
class ServerFacts:
    """What the server says about itself and the deploy's account."""

    url: str
    version: tuple[int, int, int]
    api_level: int
    #: The cluster's name, or None for a server that is not clustered.
    cluster: str | None
    #: JetStream servers the deploy can see: 1 unclustered; a cluster's advertised servers;
    #: None when a cluster advertises none (`no_advertise`), so the count is unknown.
    servers: int | None
    limits: Mapping[str, Any] = field(default_factory=dict)
    streams_in_use: int = 0

    @classmethod
    def from_info(cls, url: str, server_info: Mapping[str, Any], account_info: Mapping[str, Any]) -> ServerFacts:
        cluster = server_info.get("cluster") or None
        advertised = len(set(server_info.get("connect_urls") or []))
        return cls(
            url=url,
            version=_version(str(server_info.get("version") or "0")),
            api_level=int((account_info.get("api") or {}).get("level", 0)),
            cluster=cluster,
            servers=1 if cluster is None else (advertised or None),
            limits=dict(account_info.get("limits") or {}),
            streams_in_use=int(account_info.get("streams") or 0),
        )


@dataclass(frozen=True)
class Requirement:
    """A configured feature that needs at least this server version and JetStream API level."""

    key: str
    feature: str
    applies: Callable[[StackConfig], bool]
    min_version: tuple[int, int, int] = (0, 0, 0)
    min_api_level: int = 0


#: Add a row when the program starts to use a server feature (nats-server release notes
#: give the version; API levels: 1 = 2.11, 2 = 2.12, 4 = 2.14).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("compression", "stream compression (s2)", lambda s: s.compression != "none", (2, 10, 0)),
)


def _limit(limits: Mapping[str, Any], name: str) -> int:
    """An account limit, or -1 (unlimited) when it is absent or not positive."""
    value = int(limits.get(name) or -1)
    return value if value > 0 else -1


def findings(stack: StackConfig, specs: Iterable[StreamSpec], consumers: Mapping[str, int],
             facts: ServerFacts, existing: Iterable[str]) -> list[tuple[str, str]]:
    """(stack key, message) for every way the server described by `facts` would refuse the config.

    `specs` are the streams the deploy declares, `consumers` the number of durables it
    declares per stream, `existing` the names of the managed streams the server holds.
    Pure: no server, no Pulumi.
    """
    problems: list[tuple[str, str]] = []
    where = facts.url
    if facts.servers is not None and stack.replicas > facts.servers:
        seen = (f"{where} is a single JetStream server (not clustered)" if facts.cluster is None
                else f"cluster {facts.cluster} at {where} advertises {facts.servers} servers")
        problems.append(("replicas", f"{stack.replicas} replicas, but {seen}, so at most {facts.servers}; "
                                     f"set replicas to {facts.servers} or point natsUrl at a larger cluster"))
    specs = list(specs)
    names = {s.name for s in specs}
    new = len(names - set(existing))
    max_streams = _limit(facts.limits, "max_streams")
    if max_streams > 0 and new and facts.streams_in_use + new > max_streams:
        problems.append(("phase", f"phase {stack.phase} creates {new} stream(s), but the account at {where} holds "
                                  f"{facts.streams_in_use} of its {max_streams} (max_streams); raise the account's "
                                  "limit or remove streams first"))
    max_consumers = _limit(facts.limits, "max_consumers")
    durables_key = "consumers" if stack.topology is None else "topology.durables"
    for stream, n in sorted(consumers.items()):
        if max_consumers > 0 and n > max_consumers:
            problems.append((durables_key, f"phase {stack.phase} puts {n} durables on stream {stream}, but the "
                                          f"account at {where} allows {max_consumers} per stream (max_consumers)"))
    max_ack_pending = _limit(facts.limits, "max_ack_pending")
    for durable in stack.table.durables:
        if max_ack_pending > 0 and durable.template.max_ack_pending > max_ack_pending:
            problems.append((f"{durable.key}.maxAckPending",
                             f"{durable.template.max_ack_pending} is above the account's max_ack_pending {max_ack_pending} "
                             f"at {where}; set it to at most {max_ack_pending}"))
    if facts.limits.get("max_bytes_required") and any(s.max_bytes <= 0 for s in specs):
        problems.append(("maxBytes", f"the account at {where} requires every stream to set a size limit "
                                     "(max_bytes_required); set maxBytes, e.g. 1073741824"))
    for req in REQUIREMENTS:
        if not req.applies(stack):
            continue
        if facts.version < req.min_version or facts.api_level < req.min_api_level:
            have = f"{'.'.join(map(str, facts.version))}, API level {facts.api_level}"
            need = f"{'.'.join(map(str, req.min_version))}, API level {req.min_api_level}"
            problems.append((req.key, f"{req.feature} needs nats-server {need}; {where} runs {have}"))
    return problems


def probe_body(spec: StreamSpec) -> dict[str, Any]:
    """The stream's real config as a create the server must refuse (see the module doc)."""
    body = spec.wire()
    for key in ("subjects", "sources", "first_seq"):
        body.pop(key, None)
    probe = f"{spec.name}_PREFLIGHT"
    body.update(name=probe, mirror={"name": f"{probe}_SOURCE", "filter_subject": "preflight..invalid"})
    return body


def probe_refusals(js: JetStream, specs: Iterable[StreamSpec], existing: Iterable[str]) -> list[tuple[str, str]]:
    """(stack key, message) for each stream the server refuses for a reason other than the probe's fault."""
    problems: list[tuple[str, str]] = []
    held = set(existing)
    for spec in specs:
        body = probe_body(spec)
        try:
            js.request(f"$JS.API.STREAM.CREATE.{body['name']}", body, stream=spec.name)
        except JetStreamAPIError as exc:
            if exc.err_code == PROBE_FAULT or (exc.err_code == 10027 and spec.name in held):
                continue  # not refused (an update needs no new stream slot)
            key, advice = REFUSALS.get(exc.err_code, (None, ""))
            if key is None:
                continue  # a refusal this check does not know how to read: apply will say
            problems.append((key, f"the server at {js.settings.describe()} refuses stream {spec.name}: "
                                  f"{exc.description} (err_code {exc.err_code}); {advice}"))
        else:  # a server that created it after all: remove it at once
            js.stream_delete(body["name"])
    return problems


def check_server(connection: ConnectionSettings, stack: StackConfig, specs: Iterable[StreamSpec],
                 consumers: Mapping[str, int], existing: Iterable[str]) -> None:
    """Ask the live server; raise ConfigError listing each problem under its stack key.

    Raises EventBusError (NatsConnectionError) when the server cannot be asked.
    """
    js = connect_quickly(connection)
    account = js.request("$JS.API.INFO")
    facts = ServerFacts.from_info(connection.describe(), getattr(js.nc, "_server_info", None) or {}, account)
    specs, existing = list(specs), list(existing)
    problems = findings(stack, specs, consumers, facts, existing)
    decided = {key for key, _ in problems}
    problems += [p for p in probe_refusals(js, specs, existing) if p[0] not in decided]
    if problems:
        lines = [f"{PROJECT}:{key}: {message}" for key, message in problems]
        raise ConfigError(f"{PROJECT}:{problems[0][0]}",
                          f"the server at {facts.url} would refuse this config:\n  " + "\n  ".join(lines))

