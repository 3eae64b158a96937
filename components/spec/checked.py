"""The checked types the spec and stack models declare fields with: names, subjects, durations.

Each applies a rule of components.spec.subjects or components.spec.durations as a
pydantic validator. Those two modules stay free of pydantic, so what uses only
their rules (the providers' check and diff of unchanged inputs, the CLI, the
binding) does not load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

from components.spec.durations import format_duration, ns, parse_duration
from components.spec.subjects import name_problem, subject_problem


def _checked(problem: Callable[[str], str | None]) -> AfterValidator:
    def check(value: str) -> str:
        if why := problem(value):
            raise ValueError(why)
        return value

    return AfterValidator(check)


#: Strings checked by the subject and name rules wherever a model declares one.
StreamName = Annotated[str, _checked(lambda v: name_problem(v, "stream"))]
ConsumerName = Annotated[str, _checked(lambda v: name_problem(v, "consumer"))]
Subject = Annotated[str, _checked(subject_problem)]


def _canonical(value: object) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return format_duration(parse_duration(value))
    raise ValueError(f"expected a duration like '48h', got {value!r}")


#: A duration field: accepts "48h" or nanoseconds, holds and prints the canonical human form.
Duration = Annotated[str, BeforeValidator(_canonical), PlainSerializer(lambda v: v, return_type=str)]


def positive(why: str) -> AfterValidator:
    """A Duration that must be longer than 0; `why` is the message otherwise."""
    return _checked(lambda v: why if ns(v) <= 0 else None)
