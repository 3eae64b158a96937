"""Moving subjects between streams without a gap, and durables off a stream without a loss.

Every step is idempotent and retried across reconnects, so a deploy cut at any
request can be run again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.jetstream.client import JetStream, connect_quickly
from components.jetstream.errors import (
    EventBusError,
    JetStreamAPIError,
    NatsConnectionError,
    SubjectOverlap,
)
from components.jetstream.live import LiveConsumer, LiveStream
from components.migration.lock import STREAM_WRITE_LOCK
from components.spec.stream import (
    DRAINED,
    MANAGED_METADATA,
    RELEASED,
    StreamSpec,
    carried_metadata,
    changed_fields,
    recorded,
    stored_subjects,
)
from components.spec.subjects import kept_in_release, split_for_claim, subjects_overlap

#: Per-request timeout inside a hand-over: short, so a lost connection is retried
#: promptly (every request there is idempotent, so a retry after a lost reply is safe).
HAND_OVER_REQUEST_TIMEOUT = 2.0
#: Pause between attempts while the server is unreachable, and the connect timeout then.
RETRY_INTERVAL = 0.2
RECONNECT_TIMEOUT = 2.0
#: Server answers that mean "try again shortly", not "no".
TRANSIENT_ERR_CODES = frozenset({10008})  # JetStream temporarily unavailable (e.g. a leader election)


class ClaimFailed(EventBusError):
    """A stream could not claim subjects it took from other streams.

    `given_back` says whether the subjects are back on the streams that released them
    (True), or whether they may have no stream until the next `pulumi up` (False).
    """

    def __init__(self, message: str, *, subjects: tuple[str, ...], stream: str, owners: tuple[str, ...],
                 given_back: bool, err_code: int = 0) -> None:
        super().__init__(message)
        self.subjects, self.stream, self.owners = subjects, stream, owners
        self.given_back, self.err_code = given_back, err_code


@dataclass
class Release:
    """One stream's subjects released for a claim, and its config before, for the give-back."""

    owner: str
    before: dict
    subjects: tuple[str, ...]


def _transient(exc: Exception) -> bool:
    if isinstance(exc, NatsConnectionError):
        return True
    return isinstance(exc, JetStreamAPIError) and exc.err_code in TRANSIENT_ERR_CODES


def _fast(js: JetStream) -> JetStream:
    """`js` with the hand-over's short, fail-fast requests: a request whose connection drops
    fails at once, so the retry comes promptly (every step here is idempotent)."""
    return js.failing_fast(HAND_OVER_REQUEST_TIMEOUT)


def _owners(js: JetStream, name: str, subjects: tuple[str, ...], takeover: list[str]) -> dict[str, list[str]]:
    """Streams other than `name` owning any of `subjects`; one outside `takeover` is an error naming it."""
    owners: dict[str, list[str]] = {}
    for subject in subjects:
        for owner in _fast(js).stream_names(subject):
            if owner != name:
                owners.setdefault(owner, []).append(subject)
    for owner, wanted in sorted(owners.items()):
        if owner not in takeover:
            raise SubjectOverlap(
                f"subjects {', '.join(wanted)} are owned by stream {owner}, which this stack does not manage",
                err_code=10065,
                stream=name,
            )
    return owners


def hand_over(js: JetStream, name: str, subjects: tuple[str, ...], takeover: list[str],
              releases: list[Release] | None = None,
              keeps: Mapping[str, Sequence[str]] | None = None) -> list[Release]:
    """Release `subjects` from the streams in `takeover` that hold them, so `name` can claim them.

    Idempotent: a stream that already released them is left alone, so it can be retried
    after a lost connection. Each release is recorded in `releases` (and returned) before
    it is sent, so a give-back also covers a release whose reply was lost. The released
    stream records its last sequence (`eventbus.released.<subject>`). A subject held by
    a stream outside `takeover` is an error naming that stream. A stream that releases a
    wider subject than `subjects` keeps, in the same call, what `keeps` lists for it under
    that subject (`kept_in_release`; the plan's `keeps`), so those never lack a stream.
    """
    releases = releases if releases is not None else []
    for owner in sorted(_owners(js, name, subjects, takeover)):
        info = _fast(js).stream_info(owner)
        if info is None:
            continue
        spec = StreamSpec.from_wire(info["config"])
        gone, keep = split_for_claim(spec.subjects, subjects)
        keep += kept_in_release(gone, keep, subjects, (keeps or {}).get(owner, ()))
        if not any(r.owner == owner for r in releases):
            releases.append(Release(owner, info["config"], gone))
        last = LiveStream.from_info(info).last_seq
        managed = carried_metadata(info["config"], keep, released={s: last for s in gone})
        _fast(js).stream_update(spec.model_copy(update={"subjects": keep}).wire(managed))
    return releases


def _retrying(js: JetStream, deadline: float, step: Any) -> Any:
    """Run `step(js)` until it succeeds, a non-transient error, or `deadline` (then the last error)."""
    while True:
        try:
            return step(js)
        except EventBusError as exc:
            if not _transient(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(RETRY_INTERVAL)
        try:
            # A fresh client (the cached one is replaced once it has lost its server), with a
            # connect timeout short enough to keep within the retry budget.
            js = connect_quickly(js.settings, RECONNECT_TIMEOUT)
        except NatsConnectionError:
            if time.monotonic() >= deadline:
                raise


def _owned_by(js: JetStream, name: str, subjects: tuple[str, ...]) -> bool:
    return all(_fast(js).stream_names(subject) == [name] for subject in subjects)


def _give_back(js: JetStream, name: str, releases: list[Release], retry_timeout: float) -> str | None:
    """Put released subjects back where they were; None on success, else why not."""
    def step(js: JetStream) -> None:
        for release in releases:
            managed = {k: v for k, v in (release.before.get("metadata") or {}).items()
                       if k.startswith(MANAGED_METADATA)}
            try:
                _fast(js).stream_update(StreamSpec.from_wire(release.before).wire(managed))
            except SubjectOverlap:
                if not _owned_by(js, name, release.subjects):
                    raise
                # The claim did land (its reply was lost): nothing to give back.

    try:
        _retrying(js, time.monotonic() + retry_timeout, step)
    except EventBusError as exc:
        return str(exc)
    return None


def claim(js: JetStream, spec: StreamSpec, config: dict, takeover: list[str], retry_timeout: float,
          keeps: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Release `spec.subjects` from their owners and claim them with `config`, back to back.

    Transient failures (lost connection, server restart, leader election) are retried for
    up to `retry_timeout` seconds; if the claim still fails, the subjects are given back to
    the streams that released them (retried as long again) and ClaimFailed names the
    subjects, both streams and the server's reason.
    """
    releases: list[Release] = []

    def step(js: JetStream) -> dict:
        hand_over(js, spec.name, spec.subjects, takeover, releases, keeps)
        return _fast(js).stream_update(config)

    try:
        return _retrying(js, time.monotonic() + retry_timeout, step)
    except EventBusError as exc:
        if not releases:
            raise  # nothing was released (e.g. an unmanaged stream owns a subject): nothing to undo
        failure = exc
    moved = tuple(sorted({s for r in releases for s in r.subjects}))
    owners = tuple(r.owner for r in releases)
    why = failure.description if isinstance(failure, JetStreamAPIError) else str(failure)
    code = failure.err_code if isinstance(failure, JetStreamAPIError) else 0
    head = (f"stream {spec.name} could not claim {', '.join(moved) or ', '.join(spec.subjects)} from "
            f"{', '.join(owners) or 'their streams'}: {why}" + (f" (err_code {code})" if code else ""))
    problem = _give_back(js, spec.name, releases, retry_timeout) if releases else None
    if problem is None:
        raise ClaimFailed(
            f"{head}. The subjects were given back to {', '.join(owners) or 'their streams'}, which still own them. "
            "Fix the cause and run `pulumi up` again",
            subjects=moved, stream=spec.name, owners=owners, given_back=True, err_code=code) from failure
    raise ClaimFailed(
        f"{head}. Giving them back failed too ({problem}): {', '.join(moved)} may have NO stream now. Run "
        "`pulumi up` again as soon as the server is reachable: it claims unowned subjects first",
        subjects=moved, stream=spec.name, owners=owners, given_back=False, err_code=code) from failure


def apply_stream(js: JetStream, spec: StreamSpec, info: dict | None, takeover: list[str],
                 retry_timeout: float, keeps: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Bring stream `spec.name` to `spec` (created if `info` is None), taking its subjects over.

    When subjects must be taken from other streams, everything the server could refuse
    about this stream is applied first (a create owning no subjects, or an update keeping
    its current subjects), so the claim is only a change of subjects; the claim records
    this stream's last sequence for each gained subject in the same call. Returns the
    stream's info after the call.
    """
    current = StreamSpec.from_wire(info["config"]) if info else None
    owners = _owners(js, spec.name, spec.subjects, takeover)
    if not owners:
        # Nothing to take: one call, as before. Subjects that nobody owns (a deploy that died
        # between release and claim) are claimed with the stream's current config first.
        if info is None or current is None:
            return js.stream_create(spec.wire())
        gained = tuple(s for s in spec.subjects if s not in current.subjects)
        last = LiveStream.from_info(info).last_seq
        if gained and changed_fields(current.model_copy(update={"subjects": spec.subjects}), spec):
            staged = current.model_copy(update={"subjects": spec.subjects})
            info = js.stream_update(staged.wire(carried_metadata(info["config"], spec.subjects, {s: last for s in gained})))
            current = staged
        managed = carried_metadata(info["config"], spec.subjects, {s: last for s in gained})
        live_managed = {k: v for k, v in (info["config"].get("metadata") or {}).items() if k.startswith(MANAGED_METADATA)}
        if changed_fields(current, spec) or managed != live_managed:
            info = js.stream_update(spec.wire(managed))
        return info
    if info is None or current is None:
        info = js.stream_create(spec.model_copy(update={"subjects": ()}).wire())
        current = StreamSpec.from_wire(info["config"])
    else:
        staged = spec.model_copy(update={"subjects": current.subjects})
        if changed_fields(current, staged):
            info = js.stream_update(staged.wire(carried_metadata(info["config"], current.subjects)))
    last = LiveStream.from_info(info).last_seq
    claims = {s: last for s in spec.subjects if s not in current.subjects}
    return claim(js, spec, spec.wire(carried_metadata(info["config"], spec.subjects, claims)), takeover, retry_timeout,
                 keeps)


# -- durables ---------------------------------------------------------------------------
def wait_for_drain(js: JetStream, stream: str, durable: str, timeout: float) -> None:
    """Give services bound to a consumer up to `timeout` seconds to process what it still holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = js.consumer_info(stream, durable)
        if info is None or not LiveConsumer.from_info(info).unprocessed:
            return
        time.sleep(0.25)


def record_drained(js: JetStream, stream: str, info: dict | None) -> None:
    """Before a durable goes from a stream that released its subjects, note there how far it got.

    Messages under its filter stored after that point have no durable (see
    `migration.read_stranded`); before it, they were processed.
    """
    if not info:
        return
    consumer = LiveConsumer.from_info(info)
    filters = consumer.filters or (">",)
    with STREAM_WRITE_LOCK:
        stream_info = js.stream_info(stream)
        if stream_info is None:
            return
        released = recorded(stream_info["config"], RELEASED)
        if not any(subjects_overlap(f, s) for f in filters for s in released):
            return
        managed = carried_metadata(stream_info["config"], tuple(stored_subjects(stream_info["config"])))
        managed[DRAINED + consumer.name] = str(consumer.ack_floor_stream_seq)
        js.stream_update(StreamSpec.from_wire(stream_info["config"]).wire(managed))


