"""`eventbus`: diagnostics for the event bus (stream info, consumer diagnostic, migration verify, plan).

This module is the edge: it reads the server, hands what it read to the pure
functions of `components.cli.diagnostics` (and `components.migration.verify`),
prints what they return, and chooses the exit code. Nothing here decides or
formats.

Start-up: `eventbus --help` imports click and this module only. Everything a
command needs (the stack config model, the JetStream client, the diagnostics,
the preview report) is imported when a command runs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from components.jetstream.errors import ConfigError, EventBusError

if TYPE_CHECKING:
    from components.jetstream.client import JetStream
    from components.spec.stack import StackConfig

#: Exit codes, the same for every command.
OK, FAILED, CANNOT_CHECK = 0, 1, 2

EXIT_CODES = """\b
Exit codes:
  0  everything checked passed (healthy, verified)
  1  a check failed or a threshold was exceeded
  2  could not check: no server, bad credentials, bad usage or stack config

\b
Connection: --url, else NATS_URL, else the stack's natsUrl, else nats://127.0.0.1:4223.
Credentials come from NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY,
NATS_CA/NATS_CERT/NATS_KEY (stack secrets cannot be decrypted here).
"""

#: Seconds to wait for a server that does not answer (the CLI should fail fast). A refused
#: connection or refused credentials fail at once: the first connect tries each server once.
CONNECT_TIMEOUT = 1.5

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    """What every command shares: the stack's settings, where the server is, and the output mode."""

    url: str
    stack: StackConfig
    stack_phase: int | None
    json: bool = False
    _js: JetStream | None = field(default=None, repr=False)

    def js(self) -> JetStream:
        """The JetStream client, connected on first use (raises NatsConnectionError)."""
        if self._js is None:
            from components.jetstream.client import ConnectionSettings, connect_quickly

            self._js = connect_quickly(ConnectionSettings.from_env(self.url), CONNECT_TIMEOUT)
        return self._js


def _fail(message: str, code: int, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}, indent=2))
    click.echo(f"eventbus: {message}", err=True)
    raise SystemExit(code)


def _emit(ctx: Context, text: str, data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, indent=2) if ctx.json else text)


def _load_stack(path: Path, url: str | None) -> tuple[StackConfig, int | None]:
    import yaml

    from components.cli import diagnostics
    from components.spec.stack import parse_stack_config

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the stack file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from exc
    raw = diagnostics.stack_values(doc, str(path))
    phase = raw.get("phase")
    raw.setdefault("phase", 0)
    raw.setdefault("natsUrl", url or diagnostics.DEFAULT_URL)
    stack = parse_stack_config(raw)
    return stack, stack.phase if phase is not None else None


def _check_phase(ctx: Context, phase: int) -> None:
    """A usage error (exit 2) unless `phase` is a phase of the stack's topology table."""
    if phase > ctx.stack.table.last_phase:
        raise click.BadParameter(f"{phase} is not a phase of the stack's topology ({ctx.stack.table.phase_range()})",
                                 param_hint="'PHASE'")


def _context(click_ctx: click.Context) -> Context:
    obj = click_ctx.find_object(Context)
    assert obj is not None, "the eventbus group always sets its Context"
    return obj


def json_option(func: F) -> F:
    """`--json` on each command too, so `eventbus stream info --json` works like `eventbus --json stream info`."""

    def set_json(click_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            _context(click_ctx).json = True

    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=set_json,
                        help="Print JSON for machines instead of tables.")(func)


class _Group(click.Group):
    """Turns the project's errors into one clear line on stderr and exit code 2 (no traceback).

    Commands defined in other modules (`LAZY`) are imported when they run, not for `--help`.
    """

    #: name -> (module, attribute, its help text for the listing; a test keeps it the command's own).
    LAZY: dict[str, tuple[str, str, str]] = {
        "preview-report": ("components.cli.preview_report", "command",
                           "A `pulumi preview` as Markdown for a pull request: phase, per-resource operations and "
                           "changed fields, subjects and consumers moving, and a warning for every destructive step."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            module, attribute, _ = self.LAZY[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            limit = formatter.width - 6 - len(name)
            if name in self.LAZY and name not in self.commands:
                rows.append((name, click.Command(name, help=self.LAZY[name][2]).get_short_help_str(limit)))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EventBusError as exc:
            obj = ctx.find_object(Context)
            _fail(str(exc), CANNOT_CHECK, bool(obj and obj.json))
        except OSError as exc:  # e.g. NATS_CREDS naming a file that does not exist
            obj = ctx.find_object(Context)
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), CANNOT_CHECK,
                  bool(obj and obj.json))


@click.group(cls=_Group, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="NATS server URL(s), comma-separated. [default: NATS_URL, else the "
              "stack's natsUrl, else nats://127.0.0.1:4223]")
@click.option("--stack", "stack_name", metavar="NAME", help="Read ./Pulumi.NAME.yaml for stream/consumer names and natsUrl.")
@click.option("--stack-config", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Read this Pulumi stack file instead of ./Pulumi.NAME.yaml.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of tables.")
@click.version_option(package_name="aa-event-bus", prog_name="eventbus")
@click.pass_context
def main(click_ctx: click.Context, url: str | None, stack_name: str | None, stack_config: Path | None,
         as_json: bool) -> None:
    """Diagnostics for the athlete-ally event bus on NATS JetStream.

    Stream and consumer names come from the stack config (defaults: the seeds' names).
    """
    if stack_name and stack_config:
        raise click.UsageError("give --stack or --stack-config, not both")
    path = stack_config or (Path(f"Pulumi.{stack_name}.yaml") if stack_name else None)
    from components.cli import diagnostics
    from components.spec.stack import parse_stack_config

    env_url = os.environ.get("NATS_URL") or None
    try:
        if path is not None:
            stack, phase = _load_stack(path, url or env_url)
        else:
            stack, phase = parse_stack_config({"phase": 0, "natsUrl": url or env_url or diagnostics.DEFAULT_URL}), None
    except ConfigError as exc:
        _fail(str(exc), CANNOT_CHECK, as_json)
    resolved = url or env_url or stack.nats_url
    click_ctx.obj = Context(url=resolved, stack=stack, stack_phase=phase, json=as_json)


# -- stream info -----------------------------------------------------------------------
@main.group()
def stream() -> None:
    """Streams of the topology."""


@stream.command("info", epilog=EXIT_CODES)
@json_option
@click.pass_context
def stream_info(click_ctx: click.Context) -> None:
    """Every stream of the topology, legacy included: subjects, limits, messages, sequences.

    A missing stream is shown as missing (exit 0).
    """
    from components.cli import diagnostics

    ctx = _context(click_ctx)
    js = ctx.js()
    infos = {name: js.stream_info(name) for name in ctx.stack.managed_names()}
    states = diagnostics.stream_states(ctx.stack, infos)
    _emit(ctx, diagnostics.format_streams(states, ctx.url), diagnostics.streams_json(states, ctx.url))


# -- consumer diagnostic ---------------------------------------------------------------
@main.group()
def consumer() -> None:
    """Durable consumers."""


@consumer.command("diagnostic", epilog=EXIT_CODES)
@click.argument("stream_name", metavar="STREAM")
@click.argument("durable", metavar="DURABLE")
@click.option("--max-pending", type=click.IntRange(min=0), metavar="N", help="Unhealthy when more than N messages are pending.")
@click.option("--max-ack-pending", type=click.IntRange(min=0), metavar="N",
              help="Unhealthy when more than N messages await their ack.")
@click.option("--max-redelivered", type=click.IntRange(min=0), metavar="N",
              help="Unhealthy when more than N messages were redelivered.")
@json_option
@click.pass_context
def consumer_diagnostic(click_ctx: click.Context, stream_name: str, durable: str, max_pending: int | None,
                        max_ack_pending: int | None, max_redelivered: int | None) -> None:
    """One durable: config, backlog, sequences; with thresholds, a health check.

    A missing consumer (or stream) exits 1 and says where the durable is instead.
    """
    from components.cli import diagnostics
    from components.migration.probe import Thresholds

    ctx = _context(click_ctx)
    js = ctx.js()
    info = js.consumer_info(stream_name, durable)
    if info is None:
        exists = js.stream_info(stream_name) is not None
        found_on = [n for n in ctx.stack.managed_names() if n != stream_name and js.consumer_info(n, durable)]
        message = diagnostics.missing_consumer_message(stream_name, durable, exists, found_on)
        if ctx.json:
            click.echo(json.dumps(diagnostics.missing_consumer_json(stream_name, durable, exists, found_on, ctx.url), indent=2))
        click.echo(f"eventbus: {message}", err=True)
        raise SystemExit(FAILED)
    report = diagnostics.consumer_report(diagnostics.ConsumerState.from_info(stream_name, info),
                                Thresholds(max_pending, max_ack_pending, max_redelivered))
    _emit(ctx, diagnostics.format_consumer(report, ctx.url), diagnostics.consumer_json(report, ctx.url))
    raise SystemExit(OK if report.healthy else FAILED)


# -- migration verify ------------------------------------------------------------------
@main.group()
def migration() -> None:
    """The phased move from one stream to three."""


@migration.command("verify", epilog=EXIT_CODES)
@click.argument("phase", type=click.IntRange(min=0))
@click.option("--strict", is_flag=True, help="Treat warnings (e.g. a backlog left in the legacy stream) as failures.")
@click.option("--probe", is_flag=True, help="Also publish one probe message per subject pattern (read back, then "
              "deleted) and check each durable's health against the stack's probe thresholds.")
@json_option
@click.pass_context
def migration_verify(click_ctx: click.Context, phase: int, strict: bool, probe: bool) -> None:
    """Does the live server match PHASE (of the stack's topology)? The same checks as the phase gate of `pulumi up`.

    Exit 0 only when every check passes (warnings are reported; --strict fails on them).
    With --probe, routing is proven with real messages: each probe must land in the
    stream that should own its subject, and none stays stored.
    """
    from components.cli import diagnostics
    from components.migration.probe import live_checks
    from components.migration.verify import verify_phase

    ctx = _context(click_ctx)
    _check_phase(ctx, phase)
    findings = verify_phase(ctx.js(), ctx.stack, phase)
    if not probe:
        _emit(ctx, diagnostics.format_verify(phase, findings, ctx.url, strict), diagnostics.verify_json(phase, findings, ctx.url, strict))
        raise SystemExit(OK if diagnostics.verify_ok(findings, strict) else FAILED)
    live = live_checks(ctx.js(), ctx.stack, phase)
    findings = [*findings, *live.findings()]
    _emit(ctx, diagnostics.format_verify(phase, findings, ctx.url, strict),
          {**diagnostics.verify_json(phase, findings, ctx.url, strict), **live.as_dict()})
    raise SystemExit(OK if diagnostics.verify_ok(findings, strict) else FAILED)


# -- plan ------------------------------------------------------------------------------
@main.command("plan", epilog=EXIT_CODES)
@click.argument("phase", type=click.IntRange(min=0))
@click.option("--mermaid", is_flag=True,
              help="Print only the subject-ownership diagram (Mermaid), as the preview report shows it.")
@json_option
@click.pass_context
def plan_cmd(click_ctx: click.Context, phase: int, mermaid: bool) -> None:
    """The impact of moving to PHASE (of the stack's topology), before anyone runs it.

    Who owns each subject now (live) and in PHASE, the messages stored under each
    subject that moves, the consumers reading it with their backlog, and the streams
    created or removed. Read-only; exit 0 unless the server cannot be read.
    """
    from components.cli import diagnostics, preview_report

    ctx = _context(click_ctx)
    _check_phase(ctx, phase)
    js = ctx.js()
    names = ctx.stack.managed_names()
    infos = {name: js.stream_info(name) for name in names}
    live = diagnostics.stream_states(ctx.stack, infos)
    consumers = [diagnostics.ConsumerState.from_info(s.name, c) for s in live if s.exists for c in js.consumer_infos(s.name)]
    counts = {
        (o.now, o.subject): js.subject_count(o.now, o.subject)
        for o in diagnostics.subject_owners(ctx.stack, phase, live) if o.moves and o.now
    }
    report = diagnostics.plan_report(ctx.stack, phase, live, consumers, counts)
    if mermaid:
        click.echo(preview_report.ownership_mermaid(preview_report.plan_ownership(report)), nl=False)
        return
    _emit(ctx, diagnostics.format_plan(report, ctx.url, ctx.stack_phase), diagnostics.plan_json(report, ctx.url, ctx.stack_phase))



if __name__ == "__main__":  # pragma: no cover - `python -m components.cli`
    sys.exit(main())
