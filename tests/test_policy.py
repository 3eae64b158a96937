"""The data-loss policy as a table: what is destroyed, whether it is allowed, and the message naming the opt-in."""

from __future__ import annotations

import pytest

from components.migration import policy
from components.migration.policy import Holding

STREAM_FULL = Holding("stream", "ORDERS", messages=3)
STREAM_EMPTY = Holding("stream", "ORDERS", messages=0)
STREAM_UNSEEN = Holding("stream", "ORDERS")
DURABLE_BUSY = Holding("consumer", "ORDERS/worker", pending=2, ack_pending=1)
DURABLE_IDLE = Holding("consumer", "ORDERS/worker", pending=0, ack_pending=0)
DURABLE_UNSEEN = Holding("consumer", "ORDERS/worker")

JUDGED = [
    # held, op, opted, fields, allowed, words the reason must carry
    (STREAM_FULL, "delete", False, (), False, ["stream ORDERS: deleting it would destroy its 3 stored messages",
                                               "Add 'ORDERS' to the stack's allowDataLoss list"]),
    (STREAM_FULL, "replace", False, ("storage",), False,
     ["replacing it because storage cannot change in place would destroy its 3 stored messages"]),
    (STREAM_FULL, "delete", True, (), True, ["allowed: the stack's allowDataLoss names it"]),
    (STREAM_EMPTY, "delete", False, (), True, ["allowed: the program saw it holding no messages"]),
    (STREAM_UNSEEN, "delete", False, (), False, ["the program did not see it empty", "add 'ORDERS' to allowDataLoss"]),
    (STREAM_UNSEEN, "replace", False, ("storage",), False,
     ["replacing it (because of storage) destroys its stored messages", "in the same change"]),
    (DURABLE_BUSY, "delete", False, (), False,
     ["consumer worker on stream ORDERS", "2 messages pending and 1 awaiting ack", "'ORDERS/worker'"]),
    (DURABLE_BUSY, "delete", True, (), True, ["names it"]),
    (DURABLE_IDLE, "delete", False, (), True, ["nothing pending or awaiting ack"]),
    (DURABLE_UNSEEN, "delete", False, (), False, ["drops its position", "add 'ORDERS/worker' to allowDataLoss"]),
    (DURABLE_UNSEEN, "replace", False, ("ack_policy",), False, ["because of ack_policy", "its position"]),
]


@pytest.mark.parametrize(("held", "op", "opted", "fields", "allowed", "words"), JUDGED,
                         ids=[f"{h.kind}-{h.messages}-{h.pending}-{op}-{o}" for h, op, o, *_ in JUDGED])
def test_judge_destructive_step_decides_and_names_the_opt_in(
        held: Holding, op: policy.Op, opted: bool, fields: tuple[str, ...], allowed: bool, words: list[str]) -> None:
    verdict = policy.judge(held, op, opted, fields)

    assert verdict.allowed is allowed
    for word in words:
        assert word in verdict.reason
    # Every refusal is recognisable as one (the preview report collects them from errors).
    assert policy.is_refusal(verdict.reason) or verdict.allowed


def test_kept_because_stream_with_messages_not_opted_in_is_kept_naming_the_opt_in() -> None:
    assert policy.kept_because(STREAM_FULL, opted=False) == "it holds 3 messages. To delete it, add 'ORDERS' to allowDataLoss"
    assert policy.kept_because(STREAM_FULL, opted=True) is None
    assert policy.kept_because(STREAM_EMPTY, opted=False) is None


@pytest.mark.parametrize(("raw", "entries"), [
    (None, ()),
    ('["A", "B/c"]', ("A", "B/c")),
    ("A", ("A",)),
    (["A"], ("A",)),
    ('"A"', ("A",)),
])
def test_opt_ins_of_a_raw_config_value_lists_what_it_names(raw: object, entries: tuple[str, ...]) -> None:
    assert policy.opt_ins(raw) == entries


def test_holding_of_a_gone_object_holds_nothing_and_may_go() -> None:
    assert policy.judge(Holding.of_stream("ORDERS", None), "delete", False).allowed
    assert policy.judge(Holding.of_consumer("ORDERS/worker", None), "delete", False).allowed
    assert not policy.judge(Holding.of_consumer("ORDERS/worker", {"num_pending": 0, "num_ack_pending": 4}),
                            "delete", False).allowed


def test_trimmed_per_subject_limit_with_subject_counts_unknown_says_it_may_discard() -> None:
    from components.spec.stream import StreamSpec

    old = StreamSpec(name="ORDERS", subjects=["orders.>"])
    new = StreamSpec(name="ORDERS", subjects=["orders.>"], max_msgs_per_subject=10)
    state = {"messages": 50, "bytes": 5000}

    assert policy.trimmed(old, new, state, 0) == [
        "max_msgs_per_subject 10 discards the oldest of each subject above it (it holds 50 in all)"]
    assert policy.trimmed(old, new, state, 0, busiest_subject=10) == []


def test_trimmed_max_age_unchanged_never_counts_messages_due_to_expire() -> None:
    from components.spec.stream import StreamSpec

    spec = StreamSpec(name="ORDERS", subjects=["orders.>"], max_age="1h", max_msgs=100)
    state = {"messages": 5, "bytes": 500, "first_ts": "2026-01-01T00:00:00Z"}  # long past one hour

    assert policy.trimmed(spec, spec, state, 2 * 10**18) == []
    assert policy.trimmed(spec.model_copy(update={"max_age": "2h"}), spec, state, 2 * 10**18) == [
        "max_age 1h expires its messages older than that (the oldest is from 2026-01-01T00:00:00Z)"]
